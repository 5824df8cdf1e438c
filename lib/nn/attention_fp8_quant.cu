// FP8 attention's quantisers: one scale per tensor for q, k and v (a maximum over each whole tensor, then
// the conversion), and the e4m3 output back to bf16. Memory-bound; 16-byte loads of eight bf16 values.
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "lib/nn/attention_fp8_quant_cuda.h"
#include "lib/nn/bf16_rows.cuh"

namespace ditgen::nn {

namespace {

constexpr int kThreads = 256;
constexpr float kE4m3Max = 448.f;
// o8 = o * 224 / max |v|: half of e4m3's range, a margin for rounded softmax weights summing above 1.
constexpr float kOutputRange = 224.f;

// One bf16 input in 16-byte vectors.
struct Rows {
  const uint4* data;
  int64_t seq, rows, vecs, batch_stride, row_stride;  // rows = batch * seq; vecs per row; strides in vectors
  __device__ const uint4* row(int64_t r) const {
    const int64_t b = r / seq;
    return data + b * batch_stride + (r - b * seq) * row_stride;
  }
};
struct Rows3 {
  Rows in[3];
  uint2* out[3];  // contiguous e4m3, eight values per uint2
};

// blockIdx.y picks the tensor; blocks take whole rows (a grid-stride loop over rows, the threads across a
// row: no division per vector); one atomic per block. Non-negative floats order as their bit patterns, so
// an integer atomicMax is a float max.
__global__ void amax3_kernel(Rows3 r, float* __restrict__ scalars) {
  __shared__ float shared[32];
  const Rows& x = r.in[blockIdx.y];
  float m = 0.f;
  for (int64_t row = blockIdx.x; row < x.rows; row += gridDim.x) {
    const uint4* src = x.row(row);
    for (int64_t i = threadIdx.x; i < x.vecs; i += kThreads) m = abs_max8(src[i], m);
  }
  m = block_max(m, shared);
  if (threadIdx.x == 0 && m > 0.f)
    atomicMax(reinterpret_cast<int*>(scalars + 4 * (kAmaxQ + blockIdx.y)), __float_as_int(m));
}

__global__ void quantize3_kernel(Rows3 r, float* __restrict__ scalars) {
  const int t = blockIdx.y;
  const Rows& x = r.in[t];
  const float amax = scalars[4 * (kAmaxQ + t)];
  const float inv = amax > 0.f ? kE4m3Max / amax : 1.f;
  for (int64_t row = blockIdx.x; row < x.rows; row += gridDim.x) {
    const uint4* src = x.row(row);
    uint2* dst = r.out[t] + row * x.vecs;
    for (int64_t i = threadIdx.x; i < x.vecs; i += kThreads) dst[i] = scale_to_e4m3(src[i], inv);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    scalars[4 * (kDescaleQ + t)] = 1.f / inv;
    if (t == 2) {
      scalars[4 * kDescaleS] = 1.f / kE4m3Max;
      scalars[4 * kScaleS] = kE4m3Max;
      const float scale_o = amax > 0.f ? kOutputRange / amax : 1.f;
      scalars[4 * kScaleO] = scale_o;
      scalars[4 * kDescaleO] = 1.f / scale_o;
    }
  }
}

__global__ void dequantize_kernel(const uint2* __restrict__ o8, uint4* __restrict__ o, int64_t vecs,
                                  const float* __restrict__ scalars) {
  const float descale = scalars[4 * kDescaleO];
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < vecs; i += int64_t{gridDim.x} * kThreads) {
    const uint2 v = o8[i];
    const __nv_fp8x2_storage_t* p = reinterpret_cast<const __nv_fp8x2_storage_t*>(&v);
    uint4 out;
    __nv_bfloat162* po = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const __half2 h = __half2(__nv_cvt_fp8x2_to_halfraw2(p[j], __NV_E4M3));
      const float2 f = __half22float2(h);
      po[j] = __floats2bfloat162_rn(f.x * descale, f.y * descale);
    }
    o[i] = out;
  }
}

int grid_for(int64_t vecs) {
  const int64_t blocks = (vecs + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

}  // namespace

bool quantize_attention_fp8(const Bf16Rows in[3], void* const out[3], float* scalars, void* stream) {
  Rows3 r{};
  int64_t most = 0;
  for (int t = 0; t < 3; ++t) {
    const Bf16Rows& x = in[t];
    if (x.width % 8 != 0 || x.row_stride % 8 != 0 || x.batch_stride % 8 != 0 || !aligned16(x.data) ||
        !aligned16(out[t]) || x.seq <= 0)
      return false;
    r.in[t] = Rows{static_cast<const uint4*>(x.data), x.seq, x.batch * x.seq, x.width / 8, x.batch_stride / 8,
                   x.row_stride / 8};
    r.out[t] = static_cast<uint2*>(out[t]);
    most = r.in[t].rows > most ? r.in[t].rows : most;
  }
  auto s = static_cast<cudaStream_t>(stream);
  if (cudaMemsetAsync(scalars + 4 * kAmaxQ, 0, 3 * 4 * sizeof(float), s) != cudaSuccess) return false;
  const dim3 grid(static_cast<unsigned>(most < 2048 ? most : 2048), 3);
  amax3_kernel<<<grid, kThreads, 0, s>>>(r, scalars);
  quantize3_kernel<<<grid, kThreads, 0, s>>>(r, scalars);
  return cudaGetLastError() == cudaSuccess;
}

bool dequantize_attention_output_fp8(const void* o8, void* o, int64_t n, const float* scalars, void* stream) {
  if (n % 8 != 0 || !aligned16(o8) || !aligned16(o)) return false;
  const int64_t vecs = n / 8;
  dequantize_kernel<<<grid_for(vecs), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const uint2*>(o8), static_cast<uint4*>(o), vecs, scalars);
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace ditgen::nn
