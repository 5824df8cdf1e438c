#!/usr/bin/env bash
# CTest mpi.two_hosts: the tiny FLUX.2 pipeline under a 4-rank mesh on two simulated hosts
# (test/two_hosts.sh: 2 ranks per host, TCP between the hosts, shared memory within) must give the very PNG
# (byte for byte) of the same mesh on one host, and the single-process image within 1/255 per channel (as
# every mpi.pipeline mesh: fp32 sums in another order).
#
#   test/run_two_hosts.sh DITGEN PNG_DIFF WORK [MESH FLAGS...]     (default mesh: --parallel ulysses_tp)
#
# Exit 77 (CTest: skipped) when the kernel refuses the namespaces, with the reason printed.
set -euo pipefail
(($# >= 3)) || { sed -n '7p' "$0" | sed 's/^# *//' >&2; exit 2; }
ditgen=$1 png_diff=$2 work=$3
shift 3
mesh=("$@")
((${#mesh[@]})) || mesh=(--parallel ulysses_tp)
here=$(cd "$(dirname "$0")" && pwd)

rm -rf "$work"
mkdir -p "$work"
run=(flux2 --warmup 0 --steps 4 --comm-timeout 60)
# One intra-op thread per rank in both mesh runs, so that they compute alike whatever the core count.
mpi_opts=(-x OMP_NUM_THREADS=1)
export OMP_NUM_THREADS=1

start=$SECONDS
rc=0
"$here/two_hosts.sh" --ranks-per-host 2 --timeout 90 --min-traffic 100000 -- \
  "${mpi_opts[@]}" "$ditgen" "${run[@]}" "${mesh[@]}" -o "$work/two_hosts.png" || rc=$?
echo "run_two_hosts: two hosts x 2 ranks (${mesh[*]}): $((SECONDS - start)) s"
((rc == 77)) && exit 77
((rc == 0)) || { echo "run_two_hosts: FAIL: the two-host run failed (exit $rc)"; exit 1; }

start=$SECONDS
OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
timeout --kill-after=5 90 mpirun --oversubscribe --bind-to none -np 4 "${mpi_opts[@]}" \
  "$ditgen" "${run[@]}" "${mesh[@]}" -o "$work/one_host.png" || { echo "run_two_hosts: FAIL: the one-host run failed"; exit 1; }
echo "run_two_hosts: one host x 4 ranks (${mesh[*]}): $((SECONDS - start)) s"

start=$SECONDS
timeout 60 "$ditgen" "${run[@]}" -o "$work/single.png" || { echo "run_two_hosts: FAIL: the single-process run failed"; exit 1; }
echo "run_two_hosts: single process: $((SECONDS - start)) s"

if ! cmp "$work/one_host.png" "$work/two_hosts.png"; then
  "$png_diff" "$work/one_host.png" "$work/two_hosts.png" 0 || true
  echo "run_two_hosts: FAIL: the two-host PNG differs from the one-host PNG of the same mesh"
  exit 1
fi
if ! "$png_diff" "$work/single.png" "$work/two_hosts.png" 1; then
  echo "run_two_hosts: FAIL: the two-host image differs from the single-process image by more than 1/255"
  exit 1
fi
echo "run_two_hosts: PASS: the two-host PNG equals the one-host PNG byte for byte, and the single-process image within 1/255"
