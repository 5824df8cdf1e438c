// Fused per-head RMSNorm + interleaved RoPE for bf16 attention inputs (FLUX.2's QK path): one warp
// per (batch, token, head) row reads the row once, normalises it in fp32, rounds to bf16 as the
// reference does between the two ops, rotates the pairs in fp32 and writes bf16 once. Replaces
// about eight fp32 passes of the ATen composition.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "lib/nn/qk_norm_rope_cuda.h"

namespace ditgen::nn {

namespace {

__global__ void qk_norm_rope_kernel(const __nv_bfloat16* __restrict__ x, int64_t sb, int64_t ss, int64_t sh,
                                    const __nv_bfloat16* __restrict__ weight, const float2* __restrict__ freqs,
                                    __nv_bfloat16* __restrict__ out, int64_t S, int64_t H, int64_t D, float eps,
                                    int64_t rows) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t h = row % H, s = (row / H) % S, b = row / (H * S);
  const __nv_bfloat162* src = reinterpret_cast<const __nv_bfloat162*>(x + b * sb + s * ss + h * sh);
  __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(out + row * D);
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(weight);
  const int64_t pairs = D / 2;

  float sum = 0.f;
  for (int64_t p = lane; p < pairs; p += 32) {
    const float2 v = __bfloat1622float2(src[p]);
    sum += v.x * v.x + v.y * v.y;
  }
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  const float r = rsqrtf(sum / static_cast<float>(D) + eps);

  for (int64_t p = lane; p < pairs; p += 32) {
    const float2 v = __bfloat1622float2(src[p]);
    const float2 w = __bfloat1622float2(w2[p]);
    // As torch.nn.RMSNorm: normalise, round to bf16, multiply the weight, round; RoPE then upcasts.
    const float a = __bfloat162float(__float2bfloat16(__bfloat162float(__float2bfloat16(v.x * r)) * w.x));
    const float c = __bfloat162float(__float2bfloat16(__bfloat162float(__float2bfloat16(v.y * r)) * w.y));
    const float2 f = freqs[s * pairs + p];  // (cos, sin)
    dst[p] = __floats2bfloat162_rn(a * f.x - c * f.y, c * f.x + a * f.y);
  }
}

}  // namespace

bool qk_norm_rope_bf16(const void* x, int64_t B, int64_t S, int64_t H, int64_t D, int64_t stride_b,
                       int64_t stride_s, int64_t stride_h, const void* weight, const void* freqs, float eps, void* out,
                       void* stream) {
  const int64_t rows = B * S * H;
  if (rows == 0) return true;
  const int threads = 256;
  const int64_t blocks = (rows * 32 + threads - 1) / threads;
  qk_norm_rope_kernel<<<static_cast<unsigned>(blocks), threads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const __nv_bfloat16*>(x), stride_b, stride_s, stride_h, static_cast<const __nv_bfloat16*>(weight),
      static_cast<const float2*>(freqs), static_cast<__nv_bfloat16*>(out), S, H, D, eps, rows);
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace ditgen::nn
