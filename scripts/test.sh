#!/usr/bin/env bash
# Sets up, builds and runs every test (unit, golden, CLI, mpirun meshes). Golden tests read
# ../shared/fixtures; a missing fixture folder is reported as skipped, never as passed.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh "$@"
cd build
ctest --output-on-failure -j "$(nproc)" --timeout 900
