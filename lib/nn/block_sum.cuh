#pragma once
// The sum of one float per thread over a block, for the row kernels that normalise one row per block.
// `shared` holds one float per warp (32 covers any block); safe to call repeatedly.
#include <cuda_runtime.h>

namespace ditgen::nn {

// Over a block of kThreads threads (a multiple of 32); `shared` holds kThreads / 32 floats.
template <int kThreads>
__device__ float block_sum(float v, float* shared) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // `shared` may still be read from the previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < kThreads / 32; ++w) total += shared[w];
  return total;
}

// Sum or max over blockDim.x threads (a multiple of 32 chosen at launch, at most 1024); `shared` holds
// blockDim.x / 32 floats.
template <bool Max>
__device__ inline float block_reduce(float v, float* shared) {
  for (int off = 16; off > 0; off /= 2) {
    const float o = __shfl_xor_sync(0xffffffffu, v, off);
    v = Max ? fmaxf(v, o) : v + o;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  __syncthreads();  // `shared` may still be read from the previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float r = shared[0];
  for (int w = 1; w < warps; ++w) r = Max ? fmaxf(r, shared[w]) : r + shared[w];
  return r;
}
__device__ inline float block_sum(float v, float* shared) { return block_reduce<false>(v, shared); }
__device__ inline float block_max(float v, float* shared) { return block_reduce<true>(v, shared); }

}  // namespace ditgen::nn
