#!/usr/bin/env bash
# The small-card table (issue 19): each row runs end to end (text encoder, denoise, decode) at real size with
# random weights, every rank capped with --gpu-memory-limit, ranks sharing the one GPU where a row has two.
#   scripts/small_cards.sh CAP_GIB [ROW...]     (build-gpu/ditgen; logs and reports to $OUT/small_cards/)
# Rows: flux2_tp2 flux2_u2_fp8 ltx2_tp2 flux2_fp8_1 ltx2_1 qwen_u2 flux2_u2 flux2_r2 (default: all, in that order);
# also flux2_u2_offload flux2_r2_offload flux2_fp8_offload_1 (--offload: the blocks that do not fit stream from host memory).
set -uo pipefail
cd "$(dirname "$0")/.."
cap=${1:?usage: scripts/small_cards.sh CAP_GIB [ROW...]}; shift
D=${DITGEN_BIN:-build-gpu/ditgen}
out=${OUT:-./gpu_out}/small_cards; mkdir -p "$out" /tmp/small_cards
rows=("$@"); (( ${#rows[@]} )) || rows=(flux2_tp2 flux2_u2_fp8 ltx2_tp2 flux2_fp8_1 ltx2_1 qwen_u2 flux2_u2 flux2_r2)
MPI=(mpirun --allow-run-as-root --oversubscribe --bind-to none -x NCCL_NVLS_ENABLE=0)
row() {  # name ranks model flags...
  local name=$1 np=$2 model=$3; shift 3
  local o=/tmp/small_cards/$name.png args
  [[ $model == ltx2 ]] && o=/tmp/small_cards/$name.mp4
  args=("$model" --random-weights --steps "${STEPS:-2}" --warmup 0 --track-memory --gpu-memory-limit "$cap" -o "$o" "$@")
  [[ $model == ltx2 ]] && args+=(--save-frames)
  local t0=$SECONDS
  if (( np == 1 )); then timeout "${ROW_TIMEOUT:-150}" "$D" "${args[@]}" > "$out/$name.log" 2>&1
  else timeout "${ROW_TIMEOUT:-150}" "${MPI[@]}" -np "$np" "$D" "${args[@]}" > "$out/$name.log" 2>&1; fi
  local rc=$?
  cp "${o%.*}.json" "$out/$name.json" 2>/dev/null
  echo "## $name: $np rank(s), $model $*, cap $cap GiB: rc=$rc in $((SECONDS - t0)) s"
  grep -E "per step|device alloc|^  [0-9] |error|out of memory" "$out/$name.log" | head -8
}
for r in "${rows[@]}"; do
  case $r in
    flux2_tp2) row $r 2 flux2 --tp 2 ;;
    flux2_u2_fp8) row $r 2 flux2 --ulysses 2 --fp8 ;;
    ltx2_tp2) row $r 2 ltx2 --tp 2 ;;
    flux2_fp8_1) row $r 1 flux2 --fp8 ;;
    ltx2_1) row $r 1 ltx2 ;;
    qwen_u2) row $r 2 qwen-image --ulysses 2 ;;
    flux2_u2) row $r 2 flux2 --ulysses 2 ;;
    flux2_r2) row $r 2 flux2 --ring 2 ;;
    flux2_u2_offload) row $r 2 flux2 --ulysses 2 --offload ;;
    flux2_r2_offload) row $r 2 flux2 --ring 2 --offload ;;
    flux2_fp8_offload_1) row $r 1 flux2 --fp8 --offload ;;
    *) echo "small_cards: unknown row '$r'" >&2; exit 2 ;;
  esac
done
