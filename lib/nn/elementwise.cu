// Elementwise passes of the DiT blocks over bf16 rows that ATen runs as several strided or broadcast passes
// on its non-vectorised path:
// - the gated residual out = x + gate * (y + bias): ATen's bias add then addcmul with a gate row per item
//   take ~150 us a call on LTX-2's [2, 6144, 4096] video stream where one vectorised pass takes ~60 us;
// - the SwiGLU MLP's input [a | silu(gate) * up] from the fused projection's strided halves (FLUX.2): silu,
//   mul and cat are three passes (~680 us for a single block at 1024^2), here one.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "lib/nn/bf16_rows.cuh"
#include "lib/nn/elementwise_cuda.h"

namespace ditgen::nn {

namespace {

constexpr int kThreads = 256;
constexpr int kVec = 8;  // bf16 per 16-byte load

struct alignas(16) Bf16x8 {
  __nv_bfloat162 v[kVec / 2];
};

// One thread per 8 consecutive elements of a row; the gate row of (b, s) at b * gate_batch + s * gate_token.
__global__ void gated_residual_kernel(const Bf16x8* __restrict__ x, const Bf16x8* __restrict__ y,
                                      const __nv_bfloat16* __restrict__ gate, const __nv_bfloat16* __restrict__ bias,
                                      Bf16x8* __restrict__ out, int64_t vectors, int64_t row_vectors, int64_t tokens,
                                      int64_t gate_batch, int64_t gate_token) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < vectors;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t row = i / row_vectors, col = (i % row_vectors) * kVec;
    const Bf16x8 xv = x[i], yv = y[i];
    Bf16x8 g{}, bv{};
    if (gate != nullptr)
      g = *reinterpret_cast<const Bf16x8*>(gate + (row / tokens) * gate_batch + (row % tokens) * gate_token + col);
    if (bias != nullptr) bv = *reinterpret_cast<const Bf16x8*>(bias + col);
    Bf16x8 o;
#pragma unroll
    for (int p = 0; p < kVec / 2; ++p) {
      const float2 a = __bfloat1622float2(xv.v[p]);
      float2 t = __bfloat1622float2(yv.v[p]);
      if (bias != nullptr) {  // rounded as ATen's separate bias add rounds it
        const float2 c = __bfloat1622float2(bv.v[p]);
        t = make_float2(round_bf16(t.x + c.x), round_bf16(t.y + c.y));
      }
      if (gate != nullptr) {
        const float2 k = __bfloat1622float2(g.v[p]);
        t = make_float2(k.x * t.x, k.y * t.y);
      }
      o.v[p] = __floats2bfloat162_rn(a.x + t.x, a.y + t.y);
    }
    out[i] = o;
  }
}

// Row r of out: [a[r, :Da] | silu(gate[r, :F]) * up[r, :F]] in 16-byte vectors (strides too). Block
// (r, c) writes vectors c * kSwigluVecs + j * kThreads + t (j < kSwigluUnroll) of row r: no per-element
// index division, and each thread issues all its loads (one from `a`, or a gate and an up vector) before
// the SwiGLU uses them.
constexpr int kSwigluUnroll = 2;  // 34 registers: seven blocks to an SM, 64 bytes in flight a thread
constexpr int kSwigluVecs = kSwigluUnroll * kThreads;

__global__ void swiglu_concat_kernel(const uint4* __restrict__ a, int64_t a_stride, int a_vecs,
                                     const uint4* __restrict__ gate_up, int64_t gu_stride, int f_vecs,
                                     uint4* __restrict__ out) {
  const int64_t row = blockIdx.x;
  const int vecs = a_vecs + f_vecs;
  const uint4* ar = a + row * a_stride;
  const uint4* g = gate_up + row * gu_stride;
  uint4* dst = out + row * vecs;
  const int first = blockIdx.y * kSwigluVecs + threadIdx.x;
  uint4 v[kSwigluUnroll], u[kSwigluUnroll];
#pragma unroll
  for (int j = 0; j < kSwigluUnroll; ++j) load_concat_input(ar, g, first + j * kThreads, a_vecs, f_vecs, v[j], u[j]);
#pragma unroll
  for (int j = 0; j < kSwigluUnroll; ++j) {
    const int i = first + j * kThreads;
    if (i < a_vecs)
      dst[i] = v[j];
    else if (i < vecs)
      dst[i] = swiglu8(v[j], u[j]);
  }
}

unsigned grid_for(int64_t vectors) {
  static const int sms = [] {
    int device = 0, n = 132;
    if (cudaGetDevice(&device) == cudaSuccess) cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device);
    return n;
  }();
  const int64_t wanted = (vectors + kThreads - 1) / kThreads;
  return static_cast<unsigned>(wanted < int64_t{sms} * 16 ? wanted : int64_t{sms} * 16);
}

}  // namespace

bool swiglu_concat_bf16(const void* a, int64_t a_stride, int64_t Da, const void* gate_up, int64_t gu_stride,
                        int64_t F, void* out, int64_t rows, void* stream) {
  const int64_t vecs = (Da + F) / kVec;
  if (rows * vecs == 0) return true;
  if (Da % kVec != 0 || F % kVec != 0 || gu_stride % kVec != 0 || !aligned16(gate_up) || !aligned16(out) ||
      (Da > 0 && (a_stride % kVec != 0 || !aligned16(a))) || rows > 0x7fffffff)
    return false;  // the caller's contract
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((vecs + kSwigluVecs - 1) / kSwigluVecs));
  swiglu_concat_kernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const uint4*>(a), a_stride / kVec, static_cast<int>(Da / kVec), static_cast<const uint4*>(gate_up),
      gu_stride / kVec, static_cast<int>(F / kVec), static_cast<uint4*>(out));
  return cudaGetLastError() == cudaSuccess;
}

bool gated_residual_bf16(const void* x, const void* y, const void* gate, const void* bias, void* out, int64_t rows,
                         int64_t tokens, int64_t D, int64_t gate_batch_stride, int64_t gate_token_stride,
                         void* stream) {
  const int64_t vectors = rows * D / kVec;
  if (vectors == 0) return true;
  gated_residual_kernel<<<grid_for(vectors), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      static_cast<const Bf16x8*>(x), static_cast<const Bf16x8*>(y), static_cast<const __nv_bfloat16*>(gate),
      static_cast<const __nv_bfloat16*>(bias), static_cast<Bf16x8*>(out), vectors, D / kVec, tokens,
      gate_batch_stride, gate_token_stride);
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace ditgen::nn
