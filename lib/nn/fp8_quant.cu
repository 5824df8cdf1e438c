// Row-wise dynamic FP8 (e4m3) quantisation of bf16 activations, one block per row, eight values per
// 16-byte load and 8-byte store. A row waits between its absolute maximum and the conversion in registers
// (up to 32768 values) or, for the SwiGLU, in shared memory (up to 49152): the input is read once and its
// prologue (GELU, SwiGLU) computed once. Longer rows take the two-pass kernels (a second read from L2, the
// prologue computed again).
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include "lib/nn/bf16_rows.cuh"
#include "lib/nn/fp8_quant_cuda.h"

namespace ditgen::nn {

namespace {

constexpr int kThreads = 256;
constexpr float kE4m3Max = 448.f;

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

// The two-pass fallback for rows too long to keep in registers: pass 1 reduces the row's absolute maximum,
// pass 2 reads the row again (from L2) and scales and converts it.
template <bool Gelu>
__global__ void quantize_rows_kernel(const __nv_bfloat16* __restrict__ x, __nv_fp8_e4m3* __restrict__ q,
                                     float* __restrict__ scale, int64_t K) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const uint4* src = reinterpret_cast<const uint4*>(x + row * K);  // 8 bf16 per uint4
  uint2* dst = reinterpret_cast<uint2*>(q + row * K);              // 8 e4m3 per uint2
  const int64_t vecs = K / 8;

  float amax = 0.f;
  for (int64_t i = threadIdx.x; i < vecs; i += kThreads) amax = abs_max8(prologue<Gelu>(src[i]), amax);
  amax = block_max(amax, shared);
  const float s = amax > 0.f ? amax / kE4m3Max : 1.f;
  const float inv = 1.f / s;
  if (threadIdx.x == 0) scale[row] = s;

  for (int64_t i = threadIdx.x; i < vecs; i += kThreads) dst[i] = scale_to_e4m3(prologue<Gelu>(src[i]), inv);
}

// The fallback for rows too long to keep in registers. Pass 1 writes the SwiGLU half to shared memory
// (bf16) and reduces the row maximum over both halves; pass 2 scales and converts the row from `a` (again,
// from L2) and shared memory.
__global__ void swiglu_concat_quantize_kernel(const __nv_bfloat16* __restrict__ a, int64_t a_stride, int64_t Da,
                                              const __nv_bfloat16* __restrict__ gate_up, int64_t gu_stride, int64_t F,
                                              __nv_fp8_e4m3* __restrict__ q, float* __restrict__ scale) {
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* h = reinterpret_cast<__nv_bfloat16*>(smem);  // [F]
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const int64_t K = Da + F;
  float amax = 0.f;
  if (Da > 0) {
    const uint4* src = reinterpret_cast<const uint4*>(a + row * a_stride);
    for (int64_t i = threadIdx.x; i < Da / 8; i += kThreads) amax = abs_max8(src[i], amax);
  }
  {
    const uint4* g = reinterpret_cast<const uint4*>(gate_up + row * gu_stride);
    const uint4* u = reinterpret_cast<const uint4*>(gate_up + row * gu_stride + F);
    uint4* hv = reinterpret_cast<uint4*>(h);
    for (int64_t i = threadIdx.x; i < F / 8; i += kThreads) {
      const uint4 out = swiglu8(g[i], u[i]);
      amax = abs_max8(out, amax);
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

// Vectors a thread keeps for a row of `vecs`: 2 up to 1024 threads (K <= 16384; 32 registers, two blocks
// of 1024 to an SM), else 4 (K <= 32768); 0 where the row is longer (the two-pass kernel).
int quantize_vecs_per_thread(int64_t vecs) {
  for (int V : {2, 4})
    if (vecs <= int64_t{1024} * V) return V;
  return 0;
}

// One read of the row: thread t keeps vectors t, t + blockDim.x, ... (V of them, coalesced) in registers,
// all loads issued before any use; the prologue runs once per value, then the row's maximum, then the
// conversion from the registers. Same per-value arithmetic as the two-pass kernel.
template <bool Gelu, int V>
__global__ void __launch_bounds__(1024, V == 2 ? 2 : 1)
    quantize_rows_resident_kernel(const uint4* __restrict__ x, uint2* __restrict__ q, float* __restrict__ scale,
                                  int vecs) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const uint4* src = x + row * vecs;
  uint4 v[V];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    v[j] = i < vecs ? src[i] : make_uint4(0, 0, 0, 0);
  }
  float amax = 0.f;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    v[j] = prologue<Gelu>(v[j]);  // GELU(0) = 0: the padding adds nothing to the maximum
    amax = abs_max8(v[j], amax);
  }
  amax = block_max(amax, shared);
  const float s = amax > 0.f ? amax / kE4m3Max : 1.f;
  const float inv = 1.f / s;
  if (threadIdx.x == 0) scale[row] = s;
  uint2* dst = q + row * vecs;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int i = threadIdx.x + j * blockDim.x;
    if (i < vecs) dst[i] = scale_to_e4m3(v[j], inv);
  }
}

// [a | silu(gate) * up] of one row, read once: the row's bf16 values wait in shared memory (up to
// kSwigluSmemMax bytes; FLUX.2's 6144 + 18432 values: 48 KB, four blocks to an SM) between the maximum and
// the conversion, as registers would need more than an SM holds for two blocks. Each thread issues the
// loads of two output vectors (one from `a`, or a gate and an up vector) before the SwiGLU uses them.
// Strides in 16-byte vectors; the up half of a row starts f_vecs after its gate half.
constexpr int kSwigluThreads = 512;
constexpr int kSwigluSmemMax = 96 * 1024;

__global__ void __launch_bounds__(kSwigluThreads, 4) swiglu_concat_quantize_resident_kernel(
    const uint4* __restrict__ a, int64_t a_stride, int a_vecs, const uint4* __restrict__ gate_up, int64_t gu_stride,
    int f_vecs, uint2* __restrict__ q, float* __restrict__ scale) {
  extern __shared__ uint4 h[];  // [a_vecs + f_vecs]
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const int vecs = a_vecs + f_vecs;
  const uint4* ar = a + row * a_stride;
  const uint4* g = gate_up + row * gu_stride;
  float amax = 0.f;
  for (int base = threadIdx.x; base < vecs; base += 2 * kSwigluThreads) {
    uint4 v[2], u[2];
#pragma unroll
    for (int j = 0; j < 2; ++j) load_concat_input(ar, g, base + j * kSwigluThreads, a_vecs, f_vecs, v[j], u[j]);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int i = base + j * kSwigluThreads;
      if (i >= vecs) continue;
      if (i >= a_vecs) v[j] = swiglu8(v[j], u[j]);
      amax = abs_max8(v[j], amax);
      h[i] = v[j];
    }
  }
  amax = block_max(amax, shared);  // its barrier also publishes h
  const float s = amax > 0.f ? amax / kE4m3Max : 1.f;
  const float inv = 1.f / s;
  if (threadIdx.x == 0) scale[row] = s;
  uint2* dst = q + row * vecs;
  for (int i = threadIdx.x; i < vecs; i += kSwigluThreads) dst[i] = scale_to_e4m3(h[i], inv);
}

// Lets `kernel` take `smem` bytes of dynamic shared memory: beyond the default 48 KB, which also counts the
// static reduction buffer, it must opt in; the carve-out hint leaves room for four 48 KB blocks an SM.
template <class Kernel>
bool allow_shared_memory(Kernel kernel, size_t smem) {
  if (smem + 1024 <= 48 * 1024) return true;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) ==
             cudaSuccess &&
         cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared) ==
             cudaSuccess;
}

template <bool Gelu>
bool launch_quantize_rows(const void* x, void* q, float* scale, int64_t rows, int64_t K, cudaStream_t stream) {
  const int64_t vecs = K / 8;
  const int V = quantize_vecs_per_thread(vecs);
  const auto* xv = static_cast<const uint4*>(x);
  auto* qv = static_cast<uint2*>(q);
  const unsigned grid = static_cast<unsigned>(rows);
  const int threads = V == 0 ? 0 : resident_threads(vecs, V);
  const int n = static_cast<int>(vecs);
  switch (V) {
    case 2: quantize_rows_resident_kernel<Gelu, 2><<<grid, threads, 0, stream>>>(xv, qv, scale, n); break;
    case 4: quantize_rows_resident_kernel<Gelu, 4><<<grid, threads, 0, stream>>>(xv, qv, scale, n); break;
    default:
      quantize_rows_kernel<Gelu><<<grid, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(x),
                                                                 static_cast<__nv_fp8_e4m3*>(q), scale, K);
  }
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace

bool quantize_rows_fp8_bf16(const void* x, void* q, float* scale, int64_t rows, int64_t K, void* stream,
                            bool gelu_tanh) {
  if (rows == 0) return true;
  if (K % 8 != 0 || !aligned16(x) || !aligned16(q)) return false;  // the callers' contract; no scalar kernel
  const auto s = static_cast<cudaStream_t>(stream);
  return gelu_tanh ? launch_quantize_rows<true>(x, q, scale, rows, K, s)
                   : launch_quantize_rows<false>(x, q, scale, rows, K, s);
}

bool swiglu_concat_quantize_fp8_bf16(const void* a, int64_t a_stride, int64_t Da, const void* gate_up,
                                     int64_t gu_stride, int64_t F, void* q, float* scale, int64_t rows, void* stream) {
  if (rows == 0) return true;
  if (Da % 8 != 0 || F % 8 != 0 || gu_stride % 8 != 0 || !aligned16(gate_up) || !aligned16(q) ||
      (Da > 0 && (a_stride % 8 != 0 || !aligned16(a))))
    return false;  // the callers' contract
  const auto s = static_cast<cudaStream_t>(stream);
  const int64_t vecs = (Da + F) / 8;
  if (const size_t smem = static_cast<size_t>(vecs) * 16; smem <= kSwigluSmemMax) {
    if (!allow_shared_memory(swiglu_concat_quantize_resident_kernel, smem)) return false;
    swiglu_concat_quantize_resident_kernel<<<static_cast<unsigned>(rows), kSwigluThreads, smem, s>>>(
        static_cast<const uint4*>(a), a_stride / 8, static_cast<int>(Da / 8), static_cast<const uint4*>(gate_up),
        gu_stride / 8, static_cast<int>(F / 8), static_cast<uint2*>(q), scale);
    return cudaGetLastError() == cudaSuccess;
  }
  const size_t smem = static_cast<size_t>(F) * 2;
  if (!allow_shared_memory(swiglu_concat_quantize_kernel, smem)) return false;
  swiglu_concat_quantize_kernel<<<static_cast<unsigned>(rows), kThreads, smem, s>>>(
      static_cast<const __nv_bfloat16*>(a), a_stride, Da, static_cast<const __nv_bfloat16*>(gate_up), gu_stride, F,
      static_cast<__nv_fp8_e4m3*>(q), scale);
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace ditgen::nn
