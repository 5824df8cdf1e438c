// Fused RMS-norm passes for bf16 rows (LTX-2's blocks): the weightless RMS norm with or without the adaLN
// modulation that follows it, and the QK RMS norm across all heads followed by the rotary embedding
// (split halves per head or interleaved pairs). Each reads its row once and writes it once, in place
// of the five to ten fp32 passes of the ATen composition; the roundings to bf16 sit where the
// composition has them, and the arithmetic is fp32 as there.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "lib/nn/block_sum.cuh"
#include "lib/nn/rms_rope_cuda.h"

namespace ditgen::nn {

namespace {

constexpr int kThreads = 256;

__device__ float round_bf16(float v) { return __bfloat162float(__float2bfloat16(v)); }

__device__ float row_sum_squares(const __nv_bfloat162* src, int64_t pairs, float* shared) {
  float sum = 0.f;
  for (int64_t p = threadIdx.x; p < pairs; p += kThreads) {
    const float2 v = __bfloat1622float2(src[p]);
    sum += v.x * v.x + v.y * v.y;
  }
  return block_sum<kThreads>(sum, shared);
}

// out = shift + bf16(x * rsqrt(mean(x^2) + eps)) * scale1, or the normalised row alone (scale1 null).
// scale1 / shift rows: item b, token s at b * mod_batch_stride + s * mod_token_stride.
__global__ void rms_modulate_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ scale1,
                                    const __nv_bfloat16* __restrict__ shift, __nv_bfloat16* __restrict__ out,
                                    int64_t D, int64_t tokens, int64_t mod_batch_stride, int64_t mod_token_stride,
                                    float eps) {
  __shared__ float shared[kThreads / 32];
  const int64_t row = blockIdx.x, b = row / tokens, s = row % tokens;
  const __nv_bfloat162* src = reinterpret_cast<const __nv_bfloat162*>(x + row * D);
  __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(out + row * D);
  const int64_t pairs = D / 2;
  const float r = rsqrtf(row_sum_squares(src, pairs, shared) / static_cast<float>(D) + eps);
  if (scale1 == nullptr) {
    for (int64_t p = threadIdx.x; p < pairs; p += kThreads) {
      const float2 v = __bfloat1622float2(src[p]);
      dst[p] = __floats2bfloat162_rn(v.x * r, v.y * r);
    }
    return;
  }
  const int64_t m = b * mod_batch_stride + s * mod_token_stride;
  const __nv_bfloat162* sc = reinterpret_cast<const __nv_bfloat162*>(scale1 + m);
  const __nv_bfloat162* sh = reinterpret_cast<const __nv_bfloat162*>(shift + m);
  for (int64_t p = threadIdx.x; p < pairs; p += kThreads) {
    const float2 v = __bfloat1622float2(src[p]);
    const float2 k = __bfloat1622float2(sc[p]);
    const float2 t = __bfloat1622float2(sh[p]);
    dst[p] = __floats2bfloat162_rn(t.x + round_bf16(v.x * r) * k.x, t.y + round_bf16(v.y * r) * k.y);
  }
}

__global__ void sum_squares_kernel(const __nv_bfloat16* __restrict__ x, float* __restrict__ out, int64_t D) {
  __shared__ float shared[kThreads / 32];
  const int64_t row = blockIdx.x;
  const float s = row_sum_squares(reinterpret_cast<const __nv_bfloat162*>(x + row * D), D / 2, shared);
  if (threadIdx.x == 0) out[row] = s;
}

// a = bf16(x * rsqrt(sumsq / width + eps) * w), then rotated in fp32 and rounded once more. Blocks walk
// (token, item) with the item fastest, so the batch's rows of one token share their table reads in L2.
__global__ void rms_rope_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ weight,
                                const float* __restrict__ sumsq, float width, const float* __restrict__ cos,
                                const float* __restrict__ sin, int64_t table_row, int rotary, int64_t half_head,
                                __nv_bfloat16* __restrict__ out, int64_t D, int64_t tokens, int64_t batch,
                                float eps) {
  __shared__ float shared[kThreads / 32];
  const int64_t s = blockIdx.x / batch, b = blockIdx.x % batch, row = b * tokens + s;
  const __nv_bfloat16* src = x + row * D;
  __nv_bfloat16* dst = out + row * D;
  const float total = sumsq != nullptr ? sumsq[row]
                                       : row_sum_squares(reinterpret_cast<const __nv_bfloat162*>(src), D / 2, shared);
  const float r = rsqrtf(total / width + eps);
  const int64_t pairs = D / 2;
  for (int64_t j = threadIdx.x; j < pairs; j += kThreads) {
    int64_t i1, i2;
    float c = 1.f, n = 0.f;
    if (rotary == 1) {  // split: element i of a head's first half pairs with element i of its second half
      const int64_t h = j / half_head, i = j % half_head;
      i1 = h * 2 * half_head + i;
      i2 = i1 + half_head;
      c = cos[s * table_row + j];
      n = sin[s * table_row + j];
    } else {  // interleaved pairs (2j, 2j + 1), or no rotation
      i1 = 2 * j;
      i2 = i1 + 1;
      if (rotary == 2) {
        c = cos[s * table_row + i1];
        n = sin[s * table_row + i1];
      }
    }
    const float a1 = round_bf16(__fmul_rn(__fmul_rn(__bfloat162float(src[i1]), r), __bfloat162float(weight[i1])));
    const float a2 = round_bf16(__fmul_rn(__fmul_rn(__bfloat162float(src[i2]), r), __bfloat162float(weight[i2])));
    if (rotary == 0) {
      dst[i1] = __float2bfloat16(a1);
      dst[i2] = __float2bfloat16(a2);
    } else {
      dst[i1] = __float2bfloat16(__fsub_rn(__fmul_rn(a1, c), __fmul_rn(a2, n)));
      dst[i2] = __float2bfloat16(__fadd_rn(__fmul_rn(a2, c), __fmul_rn(a1, n)));
    }
  }
}

}  // namespace

bool rms_modulate_bf16(const void* x, const void* scale1, const void* shift, void* out, int64_t rows, int64_t tokens,
                       int64_t D, int64_t mod_batch_stride, int64_t mod_token_stride, float eps, void* stream) {
  if (rows == 0) return true;
  rms_modulate_kernel<<<static_cast<unsigned>(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(scale1),
      static_cast<const __nv_bfloat16*>(shift), static_cast<__nv_bfloat16*>(out), D, tokens, mod_batch_stride,
      mod_token_stride, eps);
  return cudaGetLastError() == cudaSuccess;
}

bool sum_squares_bf16(const void* x, float* out, int64_t rows, int64_t D, void* stream) {
  if (rows == 0) return true;
  sum_squares_kernel<<<static_cast<unsigned>(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const __nv_bfloat16*>(x), out, D);
  return cudaGetLastError() == cudaSuccess;
}

bool rms_rope_bf16(const void* x, const void* weight, const float* sumsq, float width, const float* cos,
                   const float* sin, int64_t table_row, int rotary, int64_t half_head, void* out, int64_t batch,
                   int64_t tokens, int64_t D, float eps, void* stream) {
  if (batch * tokens == 0) return true;
  rms_rope_kernel<<<static_cast<unsigned>(batch * tokens), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(weight), sumsq, width, cos, sin,
      table_row, rotary, half_head, static_cast<__nv_bfloat16*>(out), D, tokens, batch, eps);
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace ditgen::nn
