#pragma once
// Device helpers of the row kernels that move bf16 rows as 16-byte vectors (8 values) and keep a whole row
// in registers: alignment, bf16 rounding, the largest magnitude and the SwiGLU of eight values (the block
// reductions are in block_sum.cuh).
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "lib/nn/block_sum.cuh"

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

// Eight bf16 values (one 16-byte load) scaled by `inv` and converted to eight saturated e4m3 values.
__device__ inline uint2 scale_to_e4m3(const uint4& v, float inv) {
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&v);
  uint2 out;
  __nv_fp8x2_storage_t* o = reinterpret_cast<__nv_fp8x2_storage_t*>(&out);
  for (int j = 0; j < 4; ++j) {
    float2 f = __bfloat1622float2(p[j]);
    f.x *= inv;
    f.y *= inv;
    o[j] = __nv_cvt_float2_to_fp8x2(f, __NV_SATFINITE, __NV_E4M3);
  }
  return out;
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

// Vector i of a row of [a | silu(gate) * up] as loaded: from `a` (i < a_vecs), else gate's into g and up's
// into u (the caller applies swiglu8; loads first, so a thread's loads are all in flight together).
__device__ inline void load_concat_input(const uint4* a, const uint4* gate_up, int i, int a_vecs, int f_vecs,
                                         uint4& g, uint4& u) {
  if (i < a_vecs) {
    g = a[i];
  } else if (i < a_vecs + f_vecs) {
    g = gate_up[i - a_vecs];
    u = gate_up[i - a_vecs + f_vecs];
  }
}

// Threads of a block that keeps `vecs` 16-byte vectors of a row, V a thread: a whole number of warps.
inline int resident_threads(int64_t vecs, int V) { return static_cast<int>((vecs + 32 * V - 1) / (32 * V)) * 32; }

}  // namespace ditgen::nn
