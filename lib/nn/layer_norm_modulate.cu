// Fused LayerNorm (no affine) + adaLN modulation for bf16 rows: out = shift + LN(x) * scale1, one
// read and one write of the row instead of the four passes of layer_norm + addcmul. Statistics in
// fp32 (two passes over the row, which stays in L2); LN(x) is rounded to bf16 as the unfused
// reference rounds it before the modulation.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "lib/nn/block_sum.cuh"
#include "lib/nn/layer_norm_modulate_cuda.h"

namespace ditgen::nn {

namespace {

constexpr int kThreads = 256;

__global__ void layer_norm_modulate_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ scale1,
                                           const __nv_bfloat16* __restrict__ shift, __nv_bfloat16* __restrict__ out,
                                           int64_t D, int64_t rows_per_batch, float eps) {
  __shared__ float shared[kThreads / 32];
  const int64_t row = blockIdx.x;
  const int64_t b = row / rows_per_batch;
  const __nv_bfloat162* src = reinterpret_cast<const __nv_bfloat162*>(x + row * D);
  const __nv_bfloat162* sc = reinterpret_cast<const __nv_bfloat162*>(scale1 + b * D);
  const __nv_bfloat162* sh = reinterpret_cast<const __nv_bfloat162*>(shift + b * D);
  __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(out + row * D);
  const int64_t pairs = D / 2;

  float sum = 0.f;
  for (int64_t p = threadIdx.x; p < pairs; p += kThreads) {
    const float2 v = __bfloat1622float2(src[p]);
    sum += v.x + v.y;
  }
  const float mean = block_sum<kThreads>(sum, shared) / static_cast<float>(D);
  float sq = 0.f;
  for (int64_t p = threadIdx.x; p < pairs; p += kThreads) {
    const float2 v = __bfloat1622float2(src[p]);
    sq += (v.x - mean) * (v.x - mean) + (v.y - mean) * (v.y - mean);
  }
  const float rstd = rsqrtf(block_sum<kThreads>(sq, shared) / static_cast<float>(D) + eps);
  for (int64_t p = threadIdx.x; p < pairs; p += kThreads) {
    const float2 v = __bfloat1622float2(src[p]);
    const float2 s = __bfloat1622float2(sc[p]);
    const float2 t = __bfloat1622float2(sh[p]);
    const float a = __bfloat162float(__float2bfloat16((v.x - mean) * rstd));
    const float c = __bfloat162float(__float2bfloat16((v.y - mean) * rstd));
    dst[p] = __floats2bfloat162_rn(fmaf(a, s.x, t.x), fmaf(c, s.y, t.y));
  }
}

}  // namespace

bool layer_norm_modulate_bf16(const void* x, const void* scale1, const void* shift, void* out, int64_t rows,
                              int64_t rows_per_batch, int64_t D, float eps, void* stream) {
  if (rows == 0) return true;
  layer_norm_modulate_kernel<<<static_cast<unsigned>(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(scale1),
      static_cast<const __nv_bfloat16*>(shift), static_cast<__nv_bfloat16*>(out), D, rows_per_batch, eps);
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace ditgen::nn
