#!/usr/bin/env bash
# snapshot.sh OUT.tar [PATH...]: a tarball of HEAD plus the working-tree state of the given paths (all
# changed and new files when none are given), made through a temporary index so that neither the
# working tree nor the real index changes. For GPU calls that must build one known state while the
# tree is being edited: carry the tarball in .gpu/ and build from it there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "$1"); shift
idx=$(mktemp); trap 'rm -f "$idx"' EXIT
export GIT_INDEX_FILE=$idx
git read-tree HEAD
if (($#)); then git add -- "$@"; else git add -A; fi
git archive --format=tar -o "$out" "$(git write-tree)"
