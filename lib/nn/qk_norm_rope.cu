// Fused per-head RMSNorm + interleaved RoPE for bf16 attention inputs (FLUX.2's and Qwen-Image's QK
// path): each (batch, token, head) row is read once, normalised in fp32, rounded to bf16 as the
// reference does between the two ops, its pairs rotated in fp32 and written as bf16 once. Replaces
// about eight fp32 passes of the ATen composition.
//
// Two kernels: for D = 64, 128 or 256 with 16-byte aligned rows, D / 8 lanes per row take eight values
// each (16-byte loads and stores, two float4 of the freqs table), so a warp holds 4, 2 or 1 rows; any
// other D or alignment takes the general kernel (one warp per row, bf16 pairs). Both do the same fp32
// arithmetic per element; only the order of the sum of squares differs.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "lib/nn/bf16_rows.cuh"
#include "lib/nn/qk_norm_rope_cuda.h"

namespace ditgen::nn {

namespace {

constexpr int kThreads = 256;

// As torch.nn.RMSNorm: normalise, round to bf16, multiply the weight, round; RoPE then upcasts.
__device__ __forceinline__ float norm_weight(float v, float r, float w) {
  return __bfloat162float(__float2bfloat16(__bfloat162float(__float2bfloat16(v * r)) * w));
}

// One row of D = kD values per kD / 8 lanes. x rows start at b * sb + s * ss + h * sh (all multiples of
// 8 elements, checked at launch); freqs is the complex64 [S, D / 2] table as floats (cos, sin, ...).
template <int kD>
__global__ void __launch_bounds__(kThreads)
    qk_norm_rope_vec_kernel(const __nv_bfloat16* __restrict__ x, int64_t sb, int64_t ss, int64_t sh,
                            const __nv_bfloat16* __restrict__ weight, const float4* __restrict__ freqs,
                            __nv_bfloat16* __restrict__ out, int64_t osb, uint32_t S, uint32_t H, float eps,
                            uint32_t rows) {
  constexpr int kLanes = kD / 8;
  static_assert(kLanes <= 32 && 32 % kLanes == 0, "a row's lanes sit within one warp");
  const uint32_t row = (blockIdx.x * kThreads + threadIdx.x) / kLanes;
  const int lane = threadIdx.x % kLanes;
  const bool valid = row < rows;  // lanes past the end still take part in the shuffles
  const uint32_t h = row % H, s = (row / H) % S, b = row / H / S;

  uint4 raw = make_uint4(0, 0, 0, 0);
  if (valid) raw = reinterpret_cast<const uint4*>(x + b * sb + s * ss + h * sh)[lane];
  const __nv_bfloat162* v2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
  float v[8];
  float sum = 0.f;
  for (int k = 0; k < 4; ++k) {
    const float2 f = __bfloat1622float2(v2[k]);
    v[2 * k] = f.x;
    v[2 * k + 1] = f.y;
    sum += f.x * f.x + f.y * f.y;
  }
  // The row's lanes are an aligned group of kLanes, so xor offsets below kLanes stay inside it.
  for (int off = kLanes / 2; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (!valid) return;
  const float r = rsqrtf(sum / static_cast<float>(kD) + eps);

  const uint4 wraw = reinterpret_cast<const uint4*>(weight)[lane];
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&wraw);
  // This lane's four pairs of (cos, sin): floats s * D + lane * 8 .. + 7.
  const float4 f0 = freqs[static_cast<int64_t>(s) * (kD / 4) + lane * 2];
  const float4 f1 = freqs[static_cast<int64_t>(s) * (kD / 4) + lane * 2 + 1];
  const float2 f[4] = {{f0.x, f0.y}, {f0.z, f0.w}, {f1.x, f1.y}, {f1.z, f1.w}};
  uint4 res;
  __nv_bfloat162* o2 = reinterpret_cast<__nv_bfloat162*>(&res);
  for (int k = 0; k < 4; ++k) {
    const float2 w = __bfloat1622float2(w2[k]);
    const float a = norm_weight(v[2 * k], r, w.x);
    const float c = norm_weight(v[2 * k + 1], r, w.y);
    o2[k] = __floats2bfloat162_rn(a * f[k].x - c * f[k].y, c * f[k].x + a * f[k].y);
  }
  reinterpret_cast<uint4*>(out + b * osb + (static_cast<int64_t>(s) * H + h) * kD)[lane] = res;
}

// The general kernel: one warp per row, any even D, 4-byte aligned rows.
__global__ void qk_norm_rope_kernel(const __nv_bfloat16* __restrict__ x, int64_t sb, int64_t ss, int64_t sh,
                                    const __nv_bfloat16* __restrict__ weight, const float2* __restrict__ freqs,
                                    __nv_bfloat16* __restrict__ out, int64_t osb, int64_t S, int64_t H, int64_t D,
                                    float eps, int64_t rows) {
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const int64_t h = row % H, s = (row / H) % S, b = row / (H * S);
  const __nv_bfloat162* src = reinterpret_cast<const __nv_bfloat162*>(x + b * sb + s * ss + h * sh);
  __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(out + b * osb + (s * H + h) * D);
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
    const float a = norm_weight(v.x, r, w.x);
    const float c = norm_weight(v.y, r, w.y);
    const float2 f = freqs[s * pairs + p];  // (cos, sin)
    dst[p] = __floats2bfloat162_rn(a * f.x - c * f.y, c * f.x + a * f.y);
  }
}

template <int kD>
void launch_vec(const void* x, int64_t S, int64_t H, int64_t sb, int64_t ss, int64_t sh, const void* weight,
                const void* freqs, float eps, void* out, int64_t out_stride_b, int64_t rows, cudaStream_t stream) {
  const int64_t blocks = (rows * (kD / 8) + kThreads - 1) / kThreads;
  qk_norm_rope_vec_kernel<kD><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(x), sb, ss, sh, static_cast<const __nv_bfloat16*>(weight),
      static_cast<const float4*>(freqs), static_cast<__nv_bfloat16*>(out), out_stride_b, static_cast<uint32_t>(S),
      static_cast<uint32_t>(H), eps, static_cast<uint32_t>(rows));
}

}  // namespace

bool qk_norm_rope_bf16(const void* x, int64_t B, int64_t S, int64_t H, int64_t D, int64_t stride_b,
                       int64_t stride_s, int64_t stride_h, const void* weight, const void* freqs, float eps, void* out,
                       int64_t out_stride_b, void* stream) {
  const int64_t rows = B * S * H;
  if (rows == 0) return true;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  // The vector kernel needs every row, the weight and the table 16-byte aligned, and 32-bit row indices.
  const bool vec = (D == 64 || D == 128 || D == 256) && aligned16(x) && stride_b % 8 == 0 && stride_s % 8 == 0 &&
                   stride_h % 8 == 0 && aligned16(weight) && aligned16(freqs) && aligned16(out) && out_stride_b % 8 == 0 &&
                   rows * (D / 8) < (int64_t{1} << 31);
  if (vec) {
    if (D == 64) launch_vec<64>(x, S, H, stride_b, stride_s, stride_h, weight, freqs, eps, out, out_stride_b, rows, st);
    if (D == 128) launch_vec<128>(x, S, H, stride_b, stride_s, stride_h, weight, freqs, eps, out, out_stride_b, rows, st);
    if (D == 256) launch_vec<256>(x, S, H, stride_b, stride_s, stride_h, weight, freqs, eps, out, out_stride_b, rows, st);
  } else {
    const int64_t blocks = (rows * 32 + kThreads - 1) / kThreads;
    qk_norm_rope_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, st>>>(
        static_cast<const __nv_bfloat16*>(x), stride_b, stride_s, stride_h, static_cast<const __nv_bfloat16*>(weight),
        static_cast<const float2*>(freqs), static_cast<__nv_bfloat16*>(out), out_stride_b, S, H, D, eps, rows);
  }
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace ditgen::nn
