#!/bin/sh
# run_unit_file.sh BINARY FILE: the Catch2 test cases of test/unit/FILE.cpp in one process (CTest unit.<name>;
# one process per file, not per test case: each start loads LibTorch, about a CPU-second).
# A test case that cannot run (a missing fixture folder, a build without FFmpeg) ends the process with exit
# code 77. Then each test case of the file runs on its own, so that the others still run: exit 1 if one
# fails, else 77 (CTest: skipped) if one was skipped, never 0 with a test case left out.
bin="$1"
tag="[#$2]"
"$bin" --filenames-as-tags "$tag"
rc=$?
[ "$rc" -eq 77 ] || exit "$rc"
echo "run_unit_file: a test case of $2 was skipped: running each on its own"
names=$(mktemp) || exit 1
trap 'rm -f "$names"' EXIT
"$bin" --filenames-as-tags --list-test-names-only "$tag" > "$names" || exit 1
status=0
while IFS= read -r name; do
  [ -n "$name" ] || continue
  # A test spec separates names at commas and reads brackets as tags: escape them.
  spec=$(printf '%s' "$name" | sed 's/\\/\\\\/g; s/,/\\,/g; s/\[/\\[/g')
  "$bin" "$spec" > /dev/null 2>&1
  case $? in
    0) echo "passed:  $name" ;;
    77) echo "skipped: $name"; [ "$status" -eq 0 ] && status=77 ;;
    *) echo "FAILED:  $name"; "$bin" "$spec"; status=1 ;;
  esac
done < "$names"
exit "$status"
