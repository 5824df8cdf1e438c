#!/usr/bin/env bash
# Sets up, builds and runs the main job on the built-in tiny FLUX.2 (random weights, no downloads):
# writes out/flux2-tiny.128x128.C0.png and its JSON report.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
./build/ditgen flux2 -o out/ "$@"
