#!/bin/sh
# run_offload_verify.sh CMD...: runs a `ditgen verify --offload` command line and passes when it passes (its
# exit code otherwise, 77 = skipped included) and its report has a passing offload check, i.e. the blocks
# really were streamed (every block copied, no copy wasted).
out=$("$@" 2>&1); rc=$?
printf '%s\n' "$out"
[ "$rc" -eq 0 ] || exit "$rc"
if ! printf '%s\n' "$out" | grep -Eq 'PASS [^ ]*/offload'; then echo "run_offload_verify: no passing offload check"; exit 1; fi
