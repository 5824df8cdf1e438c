#!/bin/sh
# check_cuda_syntax.sh SOURCE_DIR: parses the sources that only the CUDA build compiles (DITGEN_CUDA
# code paths and *.cu kernels) with the CUDA toolkit's headers, so CPU-only CI catches their compile
# errors. Exit 77 (skipped) where the toolkit or the c10/cuda headers are absent.
src="$1"
cuda=/usr/local/cuda
mpi_inc=$(mpicxx --showme:incdirs 2>/dev/null | awk '{print $1}')
[ -f "$cuda/include/cuda_runtime.h" ] && [ -f /usr/include/c10/cuda/CUDAStream.h ] && [ -x "$cuda/bin/nvcc" ] || {
  echo "check_cuda_syntax: no CUDA toolkit or c10/cuda headers here: skipped"; exit 77; }
rc=0
for f in $(grep -rl "DITGEN_CUDA" "$src/lib" "$src/models" --include=*.cpp) "$src"/lib/comm/*_cuda.cpp; do
  echo "parse $f"
  g++ -std=c++17 -fsyntax-only -DDITGEN_CUDA=1 -DOMPI_SKIP_MPICXX=1 -I"$src/test/cuda_stub" -I"$src" \
      -I"$cuda/include" -I/usr/include/torch/csrc/api/include ${mpi_inc:+-I$mpi_inc} "$f" || rc=1
done
for f in $(find "$src/lib" "$src/models" -name '*.cu'); do
  echo "nvcc $f"
  "$cuda/bin/nvcc" -std=c++17 -arch=sm_90a -I"$src" -c "$f" -o /tmp/ditgen_cuda_syntax_$$.o || rc=1
done
rm -f /tmp/ditgen_cuda_syntax_$$.o
exit $rc
