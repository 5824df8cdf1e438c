// Row-wise dynamic FP8 (e4m3) quantisation of bf16 activations: one block per row; pass 1 reduces the
// row's absolute maximum, pass 2 scales and converts eight values per thread and step (16-byte loads,
// 8-byte stores).
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "lib/nn/fp8_quant_cuda.h"

namespace ditgen::nn {

namespace {

constexpr int kThreads = 256;
constexpr float kE4m3Max = 448.f;

__device__ float block_max(float v, float* shared) {
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float m = 0.f;
  for (int w = 0; w < kThreads / 32; ++w) m = fmaxf(m, shared[w]);
  return m;
}

// Eight bf16 values (one 16-byte load) scaled by `inv` and converted to eight saturated e4m3 values.
__device__ uint2 scale_to_e4m3(const uint4& v, float inv) {
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

// GELU (tanh form) in fp32, rounded to bf16 as at::gelu(x, "tanh") rounds it.
__device__ float gelu_tanh_bf16(float x) {
  constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
  constexpr float kKappa = 0.044715f;
  return __bfloat162float(__float2bfloat16(0.5f * x * (1.f + tanhf(kBeta * (x + kKappa * x * x * x)))));
}

// Eight bf16 values, through the GELU when `Gelu`, as bf16.
template <bool Gelu>
__device__ uint4 prologue(const uint4& u) {
  if constexpr (!Gelu) {
    return u;
  } else {
    uint4 out;
    const __nv_bfloat16* p = reinterpret_cast<const __nv_bfloat16*>(&u);
    __nv_bfloat16* o = reinterpret_cast<__nv_bfloat16*>(&out);
    for (int j = 0; j < 8; ++j) o[j] = __float2bfloat16(gelu_tanh_bf16(__bfloat162float(p[j])));
    return out;
  }
}

template <bool Gelu>
__global__ void quantize_rows_kernel(const __nv_bfloat16* __restrict__ x, __nv_fp8_e4m3* __restrict__ q,
                                     float* __restrict__ scale, int64_t K) {
  __shared__ float shared[kThreads / 32];
  const int64_t row = blockIdx.x;
  const uint4* src = reinterpret_cast<const uint4*>(x + row * K);  // 8 bf16 per uint4
  uint2* dst = reinterpret_cast<uint2*>(q + row * K);              // 8 e4m3 per uint2
  const int64_t vecs = K / 8;

  float amax = 0.f;
  for (int64_t i = threadIdx.x; i < vecs; i += kThreads) {
    const uint4 u = prologue<Gelu>(src[i]);
    const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&u);
    for (int j = 0; j < 4; ++j) {
      const float2 f = __bfloat1622float2(p[j]);
      amax = fmaxf(amax, fmaxf(fabsf(f.x), fabsf(f.y)));
    }
  }
  amax = block_max(amax, shared);
  const float s = amax > 0.f ? amax / kE4m3Max : 1.f;
  const float inv = 1.f / s;
  if (threadIdx.x == 0) scale[row] = s;

  for (int64_t i = threadIdx.x; i < vecs; i += kThreads) dst[i] = scale_to_e4m3(prologue<Gelu>(src[i]), inv);
}

// Pass 1 writes the SwiGLU half to shared memory (bf16) and reduces the row maximum over both halves;
// pass 2 scales and converts the row from `a` and shared memory.
__global__ void swiglu_concat_quantize_kernel(const __nv_bfloat16* __restrict__ a, int64_t a_stride, int64_t Da,
                                              const __nv_bfloat16* __restrict__ gate_up, int64_t gu_stride, int64_t F,
                                              __nv_fp8_e4m3* __restrict__ q, float* __restrict__ scale) {
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* h = reinterpret_cast<__nv_bfloat16*>(smem);  // [F]
  __shared__ float shared[kThreads / 32];
  const int64_t row = blockIdx.x;
  const int64_t K = Da + F;
  float amax = 0.f;
  if (Da > 0) {
    const uint4* src = reinterpret_cast<const uint4*>(a + row * a_stride);
    for (int64_t i = threadIdx.x; i < Da / 8; i += kThreads) {
      const uint4 u = src[i];
      const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&u);
      for (int j = 0; j < 4; ++j) {
        const float2 f = __bfloat1622float2(p[j]);
        amax = fmaxf(amax, fmaxf(fabsf(f.x), fabsf(f.y)));
      }
    }
  }
  {
    const uint4* g = reinterpret_cast<const uint4*>(gate_up + row * gu_stride);
    const uint4* u = reinterpret_cast<const uint4*>(gate_up + row * gu_stride + F);
    uint4* hv = reinterpret_cast<uint4*>(h);
    for (int64_t i = threadIdx.x; i < F / 8; i += kThreads) {
      const uint4 gv = g[i], uv = u[i];
      const __nv_bfloat16* gp = reinterpret_cast<const __nv_bfloat16*>(&gv);
      const __nv_bfloat16* up = reinterpret_cast<const __nv_bfloat16*>(&uv);
      uint4 out;
      __nv_bfloat16* op = reinterpret_cast<__nv_bfloat16*>(&out);
      for (int j = 0; j < 8; ++j) {
        const float x = __bfloat162float(gp[j]);
        const float s = __bfloat162float(__float2bfloat16(x / (1.f + expf(-x))));  // silu, rounded as at::silu
        op[j] = __float2bfloat16(s * __bfloat162float(up[j]));
        amax = fmaxf(amax, fabsf(__bfloat162float(op[j])));
      }
      hv[i] = out;
    }
  }
  amax = block_max(amax, shared);
  const float s = amax > 0.f ? amax / kE4m3Max : 1.f;
  const float inv = 1.f / s;
  if (threadIdx.x == 0) scale[row] = s;
  uint2* dst = reinterpret_cast<uint2*>(q + row * K);
  if (Da > 0) {
    const uint4* src = reinterpret_cast<const uint4*>(a + row * a_stride);
    for (int64_t i = threadIdx.x; i < Da / 8; i += kThreads) dst[i] = scale_to_e4m3(src[i], inv);
  }
  const uint4* hv = reinterpret_cast<const uint4*>(h);
  for (int64_t i = threadIdx.x; i < F / 8; i += kThreads) dst[Da / 8 + i] = scale_to_e4m3(hv[i], inv);
}

}  // namespace

bool quantize_rows_fp8_bf16(const void* x, void* q, float* scale, int64_t rows, int64_t K, void* stream,
                            bool gelu_tanh) {
  if (rows == 0) return true;
  const auto kernel = gelu_tanh ? quantize_rows_kernel<true> : quantize_rows_kernel<false>;
  kernel<<<static_cast<unsigned>(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const __nv_bfloat16*>(x), static_cast<__nv_fp8_e4m3*>(q), scale, K);
  return cudaGetLastError() == cudaSuccess;
}

bool swiglu_concat_quantize_fp8_bf16(const void* a, int64_t a_stride, int64_t Da, const void* gate_up,
                                     int64_t gu_stride, int64_t F, void* q, float* scale, int64_t rows, void* stream) {
  if (rows == 0) return true;
  const size_t smem = static_cast<size_t>(F) * 2;
  if (smem > 48 * 1024) {
    if (cudaFuncSetAttribute(swiglu_concat_quantize_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem)) != cudaSuccess)
      return false;
  }
  swiglu_concat_quantize_kernel<<<static_cast<unsigned>(rows), kThreads, smem, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const __nv_bfloat16*>(a), a_stride, Da, static_cast<const __nv_bfloat16*>(gate_up), gu_stride, F,
      static_cast<__nv_fp8_e4m3*>(q), scale);
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace ditgen::nn
