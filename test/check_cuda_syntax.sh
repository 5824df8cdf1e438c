#!/bin/sh
# check_cuda_syntax.sh SOURCE_DIR [JOBS]: parses the sources that only the CUDA build compiles (DITGEN_CUDA
# code paths and *.cu kernels) with the CUDA toolkit's headers, so CPU-only CI catches their compile
# errors. Exit 77 (skipped) where the toolkit or the c10/cuda headers are absent.
# Each C++ file is checked on its own (g++ -fsyntax-only) against one precompiled <ATen/ATen.h>, as the
# build's own precompiled header gives it; each kernel goes through nvcc's front end and device compiler
# (--ptx: host and device code are both type-checked; no ptxas, no host object). JOBS (default 2) at once.
src="$1"
jobs="${2:-2}"
cuda=/usr/local/cuda
mpi_inc=$(mpicxx --showme:incdirs 2>/dev/null | awk '{print $1}')
[ -f "$cuda/include/cuda_runtime.h" ] && [ -f /usr/include/c10/cuda/CUDAStream.h ] && [ -x "$cuda/bin/nvcc" ] || {
  echo "check_cuda_syntax: no CUDA toolkit or c10/cuda headers here: skipped"; exit 77; }
work=$(mktemp -d /tmp/ditgen_cuda_syntax.XXXXXX) || exit 1
trap 'rm -rf "$work"' EXIT
flags="-std=c++17 -DDITGEN_CUDA=1 -DOMPI_SKIP_MPICXX=1 -I$src/test/cuda_stub -I$src -I$cuda/include
       -I/usr/include/torch/csrc/api/include ${mpi_inc:+-I$mpi_inc}"
printf '#include <ATen/ATen.h>\n#include <functional>\n#include <memory>\n#include <string>\n#include <vector>\n' \
  > "$work/pch.h"
# shellcheck disable=SC2086
g++ $flags -x c++-header "$work/pch.h" -o "$work/pch.h.gch" || exit 1
{
  for f in $(grep -rl "DITGEN_CUDA" "$src/lib" "$src/models" --include=*.cpp) "$src"/lib/comm/*_cuda.cpp; do
    echo "g++ $f"
  done
  for f in $(find "$src/lib" "$src/models" -name '*.cu'); do
    echo "nvcc $f"
  done
} > "$work/list"
export src cuda flags work
# One line per file: "g++ FILE" or "nvcc FILE". A failing file prints its errors, the others still run, and
# xargs exits non-zero.
xargs -P "$jobs" -L 1 sh -c '
  case "$0" in
    g++) echo "parse $1"; g++ $flags -Winvalid-pch -include "$work/pch.h" -fsyntax-only "$1" ;;
    nvcc) echo "nvcc $1"; "$cuda/bin/nvcc" -std=c++17 -arch=sm_90a -I"$src" --ptx "$1" -o "$work/$(basename "$1").ptx" ;;
  esac' < "$work/list"
