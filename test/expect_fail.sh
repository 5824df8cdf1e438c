#!/bin/sh
# expect_fail.sh REGEX CMD...: passes when CMD exits non-zero and its output matches REGEX
# (grep -E), i.e. bad input ends the run with a message naming the problem.
regex="$1"; shift
out=$("$@" 2>&1); rc=$?
printf '%s\n' "$out"
if [ "$rc" -eq 0 ]; then echo "expect_fail: the command succeeded but should have failed"; exit 1; fi
if ! printf '%s\n' "$out" | grep -Eq -- "$regex"; then echo "expect_fail: output does not match /$regex/"; exit 1; fi
echo "expect_fail: failed as expected (exit $rc)"
