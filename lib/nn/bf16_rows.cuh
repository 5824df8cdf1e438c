#pragma once
// Device helpers of the row kernels that move bf16 rows as 16-byte vectors (8 values) and keep a whole row
// in registers: block reductions for any block size, and the SwiGLU of eight values.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ditgen::nn {

// Whether a vectorised kernel may read / write rows at `p`: a 16-byte aligned base; row strides are
// checked by the callers as multiples of 8 elements.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

__device__ inline float round_bf16(float v) { return __bfloat162float(__float2bfloat16(v)); }

// The largest |value| of eight bf16 values and m.
__device__ inline float abs_max8(const uint4& v, float m) {
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(p[j]);
    m = fmaxf(m, fmaxf(fabsf(f.x), fabsf(f.y)));
  }
  return m;
}

// silu(g) * u of eight values: silu rounded to bf16 before the product, as at::silu then the mul round.
__device__ inline uint4 swiglu8(const uint4& g, const uint4& u) {
  const __nv_bfloat162* gp = reinterpret_cast<const __nv_bfloat162*>(&g);
  const __nv_bfloat162* up = reinterpret_cast<const __nv_bfloat162*>(&u);
  uint4 out;
  __nv_bfloat162* op = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
  for (int p = 0; p < 4; ++p) {
    const float2 x = __bfloat1622float2(gp[p]), y = __bfloat1622float2(up[p]);
    op[p] = __floats2bfloat162_rn(round_bf16(x.x / (1.f + expf(-x.x))) * y.x,
                                  round_bf16(x.y / (1.f + expf(-x.y))) * y.y);
  }
  return out;
}

// Sum / max of one float per thread over the block (blockDim.x a multiple of 32, at most 1024). `shared`
// holds 32 floats; safe to call repeatedly.
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
__device__ inline float block_sum_any(float v, float* shared) { return block_reduce<false>(v, shared); }
__device__ inline float block_max_any(float v, float* shared) { return block_reduce<true>(v, shared); }

// Threads of a block that keeps `vecs` 16-byte vectors of a row, V a thread: a whole number of warps.
inline int resident_threads(int64_t vecs, int V) { return static_cast<int>((vecs + 32 * V - 1) / (32 * V)) * 32; }

}  // namespace ditgen::nn
