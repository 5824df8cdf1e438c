#!/usr/bin/env bash
# Installs the Debian 12 packages ditgen builds and tests with. Idempotent: packages that are
# already present are skipped, so a second run does not touch the network.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev            # LibTorch 1.13, CPU
  libopenmpi-dev openmpi-bin
  iproute2 util-linux mount  # ip, unshare, nsenter: the two-host test (test/two_hosts.sh)
  libcli11-dev libfmt-dev libspdlog-dev nlohmann-json3-dev libstb-dev catch2
  libutf8proc-dev libonig-dev zlib1g-dev
  libssl-dev              # libcrypto: SHA-256 of input images
  libavformat-dev libavcodec-dev libavutil-dev libswscale-dev libswresample-dev  # MP4 (H.264 + AAC)
  ffmpeg                  # ffprobe, for the video tests
  python3                 # scripts/bench_sweep.sh (JSON and the table)
  libopenblas0-openmp     # optimised BLAS for LibTorch's CPU matmuls (Debian defaults to reference BLAS)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi
