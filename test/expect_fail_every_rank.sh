#!/bin/sh
# expect_fail_every_rank.sh N REGEX CMD...: passes when CMD (a launch of N ranks) exits non-zero and every
# rank r of 0..N-1 printed a line matching "[rank r/N] REGEX" (grep -E): each rank refused on its own.
n="$1"; regex="$2"; shift 2
out=$("$@" 2>&1); rc=$?
printf '%s\n' "$out"
if [ "$rc" -eq 0 ]; then echo "expect_fail_every_rank: the command succeeded but should have failed"; exit 1; fi
r=0
while [ "$r" -lt "$n" ]; do
  if ! printf '%s\n' "$out" | grep -Eq -- "\[rank $r/$n\] $regex"; then
    echo "expect_fail_every_rank: no line of rank $r/$n matches /$regex/"; exit 1
  fi
  r=$((r + 1))
done
echo "expect_fail_every_rank: all $n ranks failed as expected (exit $rc)"
