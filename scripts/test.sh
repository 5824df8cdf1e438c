#!/usr/bin/env bash
# Sets up, builds and runs the tests (unit, golden, CLI, mpirun meshes; DITGEN_TESTS=all: the extended set too). Golden tests read
# ../shared/fixtures; a missing fixture folder is reported as skipped, never as passed.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh "$@"
cd build
# The extended set (more meshes and cases of paths the others already cover) with DITGEN_TESTS=all.
skip=(-LE extended)
[[ ${DITGEN_TESTS:-} == all ]] && skip=()
ctest --output-on-failure -j "$(nproc)" --timeout 900 "${skip[@]}"
