// Fused LayerNorm (no affine) + adaLN modulation for bf16 rows: out = shift + LN(x) * scale1, one
// read and one write of the row instead of the four passes of layer_norm + addcmul. Statistics in
// fp32 (mean, then the centred sum of squares); LN(x) is rounded to bf16 as the unfused reference
// rounds it before the modulation. Rows of up to 16384 values (16-byte aligned, D % 8 == 0) stay in
// registers as 16-byte vectors; others take the bf16-pair kernel, which reads the row three times (from
// L2 after the first).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "lib/nn/bf16_rows.cuh"
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

// Vectors a thread keeps for a row of `vecs`: 2 within 512 threads (D <= 8192; ~40 registers, as the
// compiler keeps the row as floats), else 4 (D <= 16384); 0 where the row is longer.
int layer_norm_vecs_per_thread(int64_t vecs) {
  for (int V : {2, 4})
    if (vecs <= int64_t{512} * V) return V;
  return 0;
}

// The same maths from registers: thread t keeps vectors t, t + blockDim.x, ... of the row (coalesced, all
// loads issued before any use). The scale and shift rows, shared by a batch item's rows, come from L2.
template <int V>
__global__ void __launch_bounds__(512) layer_norm_modulate_resident_kernel(
    const uint4* __restrict__ x, const uint4* __restrict__ scale1, const uint4* __restrict__ shift,
    uint4* __restrict__ out, int vecs, int64_t rows_per_batch, float eps) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const int64_t b = row / rows_per_batch;
  const uint4* src = x + row * vecs;
  const uint4* sc = scale1 + b * vecs;
  const uint4* sh = shift + b * vecs;
  uint4 v[V];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < vecs) v[j] = src[i];
  }
  const float D = static_cast<float>(int64_t{vecs} * 8);
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    if (threadIdx.x + j * blockDim.x >= vecs) continue;
    const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&v[j]);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __bfloat1622float2(p[e]);
      sum += f.x + f.y;
    }
  }
  const float mean = block_sum(sum, shared) / D;
  float sq = 0.f;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    if (threadIdx.x + j * blockDim.x >= vecs) continue;
    const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&v[j]);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __bfloat1622float2(p[e]);
      sq += (f.x - mean) * (f.x - mean) + (f.y - mean) * (f.y - mean);
    }
  }
  const float rstd = rsqrtf(block_sum(sq, shared) / D + eps);
  uint4* dst = out + row * vecs;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i >= vecs) continue;
    const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&v[j]);
    const uint4 k = sc[i], t = sh[i];
    const __nv_bfloat162* kp = reinterpret_cast<const __nv_bfloat162*>(&k);
    const __nv_bfloat162* tp = reinterpret_cast<const __nv_bfloat162*>(&t);
    uint4 o;
    __nv_bfloat162* op = reinterpret_cast<__nv_bfloat162*>(&o);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 f = __bfloat1622float2(p[e]);
      const float2 s = __bfloat1622float2(kp[e]);
      const float2 h = __bfloat1622float2(tp[e]);
      const float a = __bfloat162float(__float2bfloat16((f.x - mean) * rstd));
      const float c = __bfloat162float(__float2bfloat16((f.y - mean) * rstd));
      op[e] = __floats2bfloat162_rn(fmaf(a, s.x, h.x), fmaf(c, s.y, h.y));
    }
    dst[i] = o;
  }
}

}  // namespace

bool layer_norm_modulate_bf16(const void* x, const void* scale1, const void* shift, void* out, int64_t rows,
                              int64_t rows_per_batch, int64_t D, float eps, void* stream) {
  if (rows == 0) return true;
  const auto s = static_cast<cudaStream_t>(stream);
  const unsigned grid = static_cast<unsigned>(rows);
  const int V = D % 8 == 0 && aligned16(x) && aligned16(scale1) && aligned16(shift) && aligned16(out)
                    ? layer_norm_vecs_per_thread(D / 8)
                    : 0;
  const auto* xv = static_cast<const uint4*>(x);
  const auto* kv = static_cast<const uint4*>(scale1);
  const auto* tv = static_cast<const uint4*>(shift);
  auto* ov = static_cast<uint4*>(out);
  const int n = static_cast<int>(D / 8);  // 16-byte vectors a row
  const int threads = resident_threads(n, V == 0 ? 1 : V);
  const int64_t per = rows_per_batch;
  switch (V) {
    case 2: layer_norm_modulate_resident_kernel<2><<<grid, threads, 0, s>>>(xv, kv, tv, ov, n, per, eps); break;
    case 4: layer_norm_modulate_resident_kernel<4><<<grid, threads, 0, s>>>(xv, kv, tv, ov, n, per, eps); break;
    default:
      layer_norm_modulate_kernel<<<grid, kThreads, 0, s>>>(
          static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(scale1),
          static_cast<const __nv_bfloat16*>(shift), static_cast<__nv_bfloat16*>(out), D, rows_per_batch, eps);
  }
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace ditgen::nn
