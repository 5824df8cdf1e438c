#!/bin/sh
# skip_unless.sh PATH CMD...: runs CMD, or exits 77 (skipped) saying so when PATH (a fixture) is missing.
[ -e "$1" ] || { echo "SKIP: $1 not found"; exit 77; }
shift
exec "$@"
