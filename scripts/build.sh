#!/usr/bin/env bash
# Installs the Debian packages (idempotent) and builds ditgen into build/ (CPU, Release).
# Extra arguments go to cmake, e.g. scripts/build.sh -DDITGEN_FIXTURES=/path/to/fixtures
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
ninja -C build -j "$(nproc)"
