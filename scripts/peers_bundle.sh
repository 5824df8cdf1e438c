#!/usr/bin/env bash
# peers_bundle.sh [GIT_DIR] [COMMIT]: writes the diffusers package (src/diffusers of the public
# huggingface/diffusers repository) at a recorded commit into .peers/diffusers, for
# bench/peers/peer_bench.py to import on the GPU machines (no pip, no network there).
#
#   GIT_DIR  a git directory of huggingface/diffusers (default: the search tool's mirror,
#            /work/.mirror/huggingface+diffusers/repo, which `fetch github:huggingface/diffusers` brings)
#   COMMIT   default: the commit shared/docs/reference/*.md were written from (diffusers 58eb52c0,
#            2026-08-23), which has Flux2Transformer2DModel, QwenImageTransformer2DModel and
#            LTX2VideoTransformer3DModel
#
# Writes .peers/diffusers/ (the package, ~10 MB: pipelines/ and modular_pipelines/ are left out, the
# transformer classes import without them), .peers/DIFFUSERS_COMMIT ("<sha> <date> <subject>") and
# .peers/MANIFEST (what was left out). .peers/ is a build output: keep it out of git (/.peers/ in
# .gitignore) and carry it to the device run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GIT_DIR=${1:-${DIFFUSERS_GIT_DIR:-/work/.mirror/huggingface+diffusers/repo}}
COMMIT=${2:-${DIFFUSERS_COMMIT:-58eb52c0803ea9af3abec60841c2a093bdf1f951}}
OUT=$ROOT/.peers
PRUNE=(pipelines modular_pipelines)

git() { command git --git-dir="$GIT_DIR" "$@"; }
[[ -d $GIT_DIR ]] || { echo "peers_bundle: no git dir $GIT_DIR (fetch github:huggingface/diffusers first)" >&2; exit 2; }
git cat-file -e "$COMMIT^{commit}" 2>/dev/null || { echo "peers_bundle: commit $COMMIT not in $GIT_DIR" >&2; exit 2; }
sha=$(git rev-parse "$COMMIT^{commit}")
for pair in transformer_flux2.py:Flux2Transformer2DModel transformer_qwenimage.py:QwenImageTransformer2DModel \
            transformer_ltx2.py:LTX2VideoTransformer3DModel; do
  f=src/diffusers/models/transformers/${pair%%:*}; c=${pair##*:}
  # grep without -q: an early exit would cut git show's pipe, a failure under pipefail.
  git show "$sha:$f" 2>/dev/null | grep "^class $c(" > /dev/null || { echo "peers_bundle: $c not in $f at $sha" >&2; exit 2; }
done

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
git archive "$sha" src/diffusers | tar -x -C "$tmp"
for p in "${PRUNE[@]}"; do rm -rf "$tmp/src/diffusers/$p"; done
find "$tmp/src/diffusers" -name '__pycache__' -prune -exec rm -rf {} +
rm -rf "$OUT/diffusers"; mkdir -p "$OUT"
mv "$tmp/src/diffusers" "$OUT/diffusers"
git log -1 --format='%H %cs %s' "$sha" > "$OUT/DIFFUSERS_COMMIT"
{ echo "diffusers src/diffusers at $sha from github:huggingface/diffusers"
  echo "left out: ${PRUNE[*]/#/src/diffusers/}"
  echo "files: $(find "$OUT/diffusers" -type f | wc -l), bytes: $(du -sb "$OUT/diffusers" | cut -f1)"; } > "$OUT/MANIFEST"
cat "$OUT/DIFFUSERS_COMMIT"; tail -1 "$OUT/MANIFEST"
echo "peers_bundle: wrote $OUT/diffusers ($(du -sh "$OUT/diffusers" | cut -f1))"
