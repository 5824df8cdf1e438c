// Fused RMS-norm passes for bf16 rows (LTX-2's blocks): the weightless RMS norm with or without the adaLN
// modulation that follows it (also right after the gated residual that updates the row, or twice with two
// modulations), and the QK RMS norm across all heads followed by the rotary embedding (split halves per head
// or interleaved pairs). Each reads its row once and writes it once, in place of the five to ten fp32 passes
// of the ATen composition; the roundings to bf16 sit where the composition has them, and the arithmetic is
// fp32 as there.
//
// Each kernel comes in two forms. The vector form (rows, weights and tables 16-byte aligned, D a
// multiple of 8 or 16) keeps the row in registers as 16-byte vectors between the sum of squares and the
// output, so it reads x once; its block size follows D (at most 256 threads, each holding 1 to 8
// vectors). The general form (any even D, 4-byte aligned rows, bf16 pairs) reads the row twice. Both do
// the same fp32 arithmetic per element; only the order of the sum of squares differs.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "lib/nn/bf16_rows.cuh"
#include "lib/nn/rms_rope_cuda.h"

namespace ditgen::nn {

namespace {

constexpr int kThreads = 256;  // the general kernels' block, and the vector kernels' largest
constexpr int kModRows = 4;    // rows per block in rms_modulate's vector kernel: they share a per-item modulation

// Eight bf16 values of one 16-byte vector as floats, and back (round to nearest even).
__device__ __forceinline__ void unpack8(const uint4& u, float (&f)[8]) {
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&u);
  for (int k = 0; k < 4; ++k) {
    const float2 t = __bfloat1622float2(p[k]);
    f[2 * k] = t.x;
    f[2 * k + 1] = t.y;
  }
}
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  uint4 u;
  __nv_bfloat162* p = reinterpret_cast<__nv_bfloat162*>(&u);
  for (int k = 0; k < 4; ++k) p[k] = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
  return u;
}
__device__ __forceinline__ float sum_squares8(const uint4& u) {
  float f[8];
  unpack8(u, f);
  float sum = 0.f;
  for (int k = 0; k < 8; ++k) sum += f[k] * f[k];
  return sum;
}

// x + gate * (y + bias) of eight values, rounded as gated_residual_kernel (lib/nn/elementwise.cu) rounds
// them: y + bias to bf16 first; the gate's product and the add then as nvcc compiles that kernel, apart (two
// fp32 roundings) after a bias, one fma without. Written out here so that the result does not hang on this
// kernel's own contraction.
__device__ __forceinline__ uint4 gated_residual8(const uint4& x, const uint4& y, const uint4& gate,
                                                 bool gated, const uint4& bias, bool biased) {
  float a[8], t[8], k[8], c[8];
  unpack8(x, a);
  unpack8(y, t);
  if (biased) {
    unpack8(bias, c);
    for (int e = 0; e < 8; ++e) t[e] = round_bf16(t[e] + c[e]);
  }
  if (gated) {
    unpack8(gate, k);
    for (int e = 0; e < 8; ++e)
      a[e] = biased ? __fadd_rn(a[e], __fmul_rn(k[e], t[e])) : __fmaf_rn(k[e], t[e], a[e]);
  } else {
    for (int e = 0; e < 8; ++e) a[e] = a[e] + t[e];
  }
  return pack8(a);
}

// Eight values of a row times its RMS factor r, rounded to bf16: the plain norm; `modulated`: shift +
// bf16(x * r) * scale1 in fp32, one fma as nvcc contracts the ATen-order expression.
__device__ __forceinline__ uint4 norm8(const uint4& v, float r, bool modulated, const uint4& scale1,
                                       const uint4& shift) {
  float f[8], k[8], t[8];
  unpack8(v, f);
  if (!modulated) {
    for (int e = 0; e < 8; ++e) f[e] = __fmul_rn(f[e], r);
    return pack8(f);
  }
  unpack8(scale1, k);
  unpack8(shift, t);
  for (int e = 0; e < 8; ++e) f[e] = __fmaf_rn(round_bf16(__fmul_rn(f[e], r)), k[e], t[e]);
  return pack8(f);
}

// ---- Vector kernels -------------------------------------------------------------------------------------

// One row per block and step: thread t holds the row's 16-byte vectors t, t + blockDim.x, ... (kVecs of
// them; those past D / 8 are zero and not stored). Several rows per block, so a per-item modulation row
// is loaded once for them (from L2 otherwise at twice the row's own traffic).
template <int kVecs>
__global__ void rms_modulate_vec_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ scale1,
                                        const __nv_bfloat16* __restrict__ shift, __nv_bfloat16* __restrict__ out,
                                        int64_t rows, int D, int64_t tokens, int64_t mod_batch_stride,
                                        int64_t mod_token_stride, float eps) {
  __shared__ float shared[32];
  const int vecs = D / 8;
  uint4 sc[kVecs], sh[kVecs];
  int64_t loaded = -1;  // the modulation row now in sc / sh
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kModRows;
  const int64_t last = first + kModRows < rows ? first + kModRows : rows;
  for (int64_t row = first; row < last; ++row) {
    const uint4* src = reinterpret_cast<const uint4*>(x + row * D);
    uint4 v[kVecs];
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      const int i = threadIdx.x + k * blockDim.x;
      v[k] = i < vecs ? src[i] : make_uint4(0, 0, 0, 0);
    }
    const int64_t m = (row / tokens) * mod_batch_stride + (row % tokens) * mod_token_stride;
    if (scale1 != nullptr && m != loaded) {  // the same for the whole block; loaded alongside x
      loaded = m;
#pragma unroll
      for (int k = 0; k < kVecs; ++k) {
        const int i = threadIdx.x + k * blockDim.x;
        if (i < vecs) {
          sc[k] = reinterpret_cast<const uint4*>(scale1 + m)[i];
          sh[k] = reinterpret_cast<const uint4*>(shift + m)[i];
        }
      }
    }
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < kVecs; ++k) sum += sum_squares8(v[k]);
    const float r = rsqrtf(block_sum(sum, shared) / static_cast<float>(D) + eps);
    uint4* dst = reinterpret_cast<uint4*>(out + row * D);
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      const int i = threadIdx.x + k * blockDim.x;
      if (i < vecs) dst[i] = norm8(v[k], r, scale1 != nullptr, sc[k], sh[k]);
    }
  }
}

// The norms that gated_residual_rms_vec_kernel writes, as in RmsModulation.
struct NormOutputs {
  const __nv_bfloat16* scale1[kGatedResidualRmsOutputs];
  const __nv_bfloat16* shift[kGatedResidualRmsOutputs];
  __nv_bfloat16* out[kGatedResidualRmsOutputs];
  int64_t batch_stride[kGatedResidualRmsOutputs], token_stride[kGatedResidualRmsOutputs];
};

// gated_residual_kernel then rms_modulate_vec_kernel's row arithmetic into kOuts outputs, with the row of
// x_out kept in registers in between: rows, vectors per thread and the order of the sum of squares as
// rms_modulate_vec_kernel's (the block shape of the same D), so its results are the same bit for bit. The
// bias, and a per-item gate or modulation row, are read again for each row where they are used (from L1: the
// same few rows for the whole block): holding them in registers for the block's rows left room for half as
// many blocks on an SM, and was 10-20 % slower on an H100 (bench/results/2026-12-06h_h100_joint_cfg).
template <int kVecs, int kOuts>
__global__ void __launch_bounds__(kThreads, kVecs > 2 ? 1 : 4)
    gated_residual_rms_vec_kernel(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ y,
                                  const __nv_bfloat16* __restrict__ gate, const __nv_bfloat16* __restrict__ bias,
                                  __nv_bfloat16* __restrict__ x_out, NormOutputs outs, int64_t rows, int D,
                                  int64_t tokens, int64_t gate_batch_stride, int64_t gate_token_stride, float eps) {
  __shared__ float shared[32];
  const int vecs = D / 8;
  const bool residual = y != nullptr, gated = residual && gate != nullptr,
             biased = residual && bias != nullptr;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kModRows;
  const int64_t last = first + kModRows < rows ? first + kModRows : rows;
  for (int64_t row = first; row < last; ++row) {
    uint4 v[kVecs], w[kVecs];
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      const int i = threadIdx.x + k * blockDim.x;
      v[k] = i < vecs ? reinterpret_cast<const uint4*>(x + row * D)[i] : make_uint4(0, 0, 0, 0);
      if (residual && i < vecs) w[k] = reinterpret_cast<const uint4*>(y + row * D)[i];
    }
    const int64_t b = row / tokens, s = row % tokens;
    const int64_t gm = b * gate_batch_stride + s * gate_token_stride;
    if (residual) {
#pragma unroll
      for (int k = 0; k < kVecs; ++k) {
        const int i = threadIdx.x + k * blockDim.x;
        if (i >= vecs) continue;  // stays zero for the sum of squares
        uint4 g{}, c{};
        if (gated) g = reinterpret_cast<const uint4*>(gate + gm)[i];
        if (biased) c = reinterpret_cast<const uint4*>(bias)[i];
        v[k] = gated_residual8(v[k], w[k], g, gated, c, biased);
        reinterpret_cast<uint4*>(x_out + row * D)[i] = v[k];
      }
    }
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < kVecs; ++k) sum += sum_squares8(v[k]);
    const float r = rsqrtf(block_sum(sum, shared) / static_cast<float>(D) + eps);
#pragma unroll
    for (int j = 0; j < kOuts; ++j) {
      uint4* dst = reinterpret_cast<uint4*>(outs.out[j] + row * D);
      const bool modulated = outs.scale1[j] != nullptr;
      const int64_t m = b * outs.batch_stride[j] + s * outs.token_stride[j];
#pragma unroll
      for (int k = 0; k < kVecs; ++k) {
        const int i = threadIdx.x + k * blockDim.x;
        if (i >= vecs) continue;
        uint4 sc{}, sh{};
        if (modulated) {
          sc = reinterpret_cast<const uint4*>(outs.scale1[j] + m)[i];
          sh = reinterpret_cast<const uint4*>(outs.shift[j] + m)[i];
        }
        dst[i] = norm8(v[k], r, modulated, sc, sh);
      }
    }
  }
}

template <int kVecs>
__global__ void sum_squares_vec_kernel(const __nv_bfloat16* __restrict__ x, float* __restrict__ out, int D) {
  __shared__ float shared[32];
  const int64_t row = blockIdx.x;
  const uint4* src = reinterpret_cast<const uint4*>(x + row * D);
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int i = threadIdx.x + k * blockDim.x;
    if (i < D / 8) sum += sum_squares8(src[i]);
  }
  const float s = block_sum(sum, shared);
  if (threadIdx.x == 0) out[row] = s;
}

// The tensors rms_rope_vec_kernel normalises and rotates with the same tables (as RopeRows).
static_assert(kRopeInputs == 2, "rms_rope_vec_kernel picks an input's pointers as the first or the second");
struct RopeInputs {
  const __nv_bfloat16* x[kRopeInputs];
  const __nv_bfloat16* weight[kRopeInputs];
  const float* sumsq[kRopeInputs];
  __nv_bfloat16* out[kRopeInputs];
  int count;
};

// One block per token, for all `batch` rows of it in every input: the token's cos / sin entries are loaded
// once into registers (the fp32 tables are as large as the bf16 rows), and each input's weights. A thread's unit is 16 elements:
// with split rotary (kRotary 1), elements i..i+7 of a head's first half and their partners i+h..i+h+7 in
// its second half (h = half_head), which share the 8 table entries j..j+7 (j = head * h + i); otherwise
// 16 consecutive elements, 8 interleaved pairs whose entries sit at the even places of the repeated
// table. Thread t holds units t, t + blockDim.x, ... (kUnits of them; those past D / 16 do nothing).
template <int kRotary, int kUnits>
__global__ void __launch_bounds__(kThreads, kUnits == 1 ? 4 : 1) rms_rope_vec_kernel(const RopeInputs in, float width, const float* __restrict__ cos,
                                    const float* __restrict__ sin, int64_t table_row, int half_head, int D,
                                    int64_t tokens, int64_t batch, float eps) {
  __shared__ float shared[32];
  const int64_t s = blockIdx.x;
  const int units = D / 16;
  int lo[kUnits];  // element offsets of the unit's two 8-element halves; hi = lo + half_head or lo + 8
  uint4 wlo[kUnits], whi[kUnits];
  float c[kUnits][8], n[kUnits][8];  // one (cos, sin) per rotated pair
#pragma unroll
  for (int k = 0; k < kUnits; ++k) {
    const int u = threadIdx.x + k * blockDim.x;
    if (u >= units) continue;
    if (kRotary == 1) {
      const int j = 8 * u, head = j / half_head;
      lo[k] = head * 2 * half_head + (j - head * half_head);
    } else {
      lo[k] = 16 * u;
    }
    if (kRotary == 1) {
      const float4* c4 = reinterpret_cast<const float4*>(cos + s * table_row + 8 * u);
      const float4* n4 = reinterpret_cast<const float4*>(sin + s * table_row + 8 * u);
      for (int q = 0; q < 2; ++q) {
        const float4 cq = c4[q], nq = n4[q];
        c[k][4 * q] = cq.x, c[k][4 * q + 1] = cq.y, c[k][4 * q + 2] = cq.z, c[k][4 * q + 3] = cq.w;
        n[k][4 * q] = nq.x, n[k][4 * q + 1] = nq.y, n[k][4 * q + 2] = nq.z, n[k][4 * q + 3] = nq.w;
      }
    } else if (kRotary == 2) {
      const float4* c4 = reinterpret_cast<const float4*>(cos + s * table_row + 16 * u);
      const float4* n4 = reinterpret_cast<const float4*>(sin + s * table_row + 16 * u);
      for (int q = 0; q < 4; ++q) {  // pairs 2q, 2q + 1 take entries 4q and 4q + 2
        const float4 cq = c4[q], nq = n4[q];
        c[k][2 * q] = cq.x, c[k][2 * q + 1] = cq.z;
        n[k][2 * q] = nq.x, n[k][2 * q + 1] = nq.z;
      }
    }
  }

  for (int input = 0; input < in.count; ++input) {
    // (Picked by a constant index: indexing the parameter's arrays by `input` would copy them to the stack.)
    const bool second = input == 1;
    const __nv_bfloat16* __restrict__ x = second ? in.x[1] : in.x[0];
    const __nv_bfloat16* __restrict__ weight = second ? in.weight[1] : in.weight[0];
    const float* __restrict__ sumsq = second ? in.sumsq[1] : in.sumsq[0];
    __nv_bfloat16* __restrict__ out = second ? in.out[1] : in.out[0];
#pragma unroll
    for (int k = 0; k < kUnits; ++k) {
      const int u = threadIdx.x + k * blockDim.x;
      if (u >= units) continue;
      wlo[k] = *reinterpret_cast<const uint4*>(weight + lo[k]);
      whi[k] = *reinterpret_cast<const uint4*>(weight + lo[k] + (kRotary == 1 ? half_head : 8));
    }
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t row = b * tokens + s;
      const __nv_bfloat16* src = x + row * D;
      __nv_bfloat16* dst = out + row * D;
      uint4 vlo[kUnits], vhi[kUnits];
      float sum = 0.f;
#pragma unroll
      for (int k = 0; k < kUnits; ++k) {
        const int u = threadIdx.x + k * blockDim.x;
        vlo[k] = vhi[k] = make_uint4(0, 0, 0, 0);
        if (u >= units) continue;
        vlo[k] = *reinterpret_cast<const uint4*>(src + lo[k]);
        vhi[k] = *reinterpret_cast<const uint4*>(src + lo[k] + (kRotary == 1 ? half_head : 8));
        sum += sum_squares8(vlo[k]) + sum_squares8(vhi[k]);
      }
      const float total = sumsq != nullptr ? sumsq[row] : block_sum(sum, shared);  // sumsq: the same for the block
      const float r = rsqrtf(total / width + eps);
#pragma unroll
      for (int k = 0; k < kUnits; ++k) {
        const int u = threadIdx.x + k * blockDim.x;
        if (u >= units) continue;
        float a1[8], a2[8], w1[8], w2[8];
        unpack8(vlo[k], a1);
        unpack8(vhi[k], a2);
        unpack8(wlo[k], w1);
        unpack8(whi[k], w2);
        for (int e = 0; e < 8; ++e) {
          a1[e] = round_bf16(__fmul_rn(__fmul_rn(a1[e], r), w1[e]));
          a2[e] = round_bf16(__fmul_rn(__fmul_rn(a2[e], r), w2[e]));
        }
        float o1[8], o2[8];
        if (kRotary == 0) {
          for (int e = 0; e < 8; ++e) o1[e] = a1[e], o2[e] = a2[e];
        } else if (kRotary == 1) {  // element e of the first half pairs with element e of the second
          for (int e = 0; e < 8; ++e) {
            o1[e] = __fsub_rn(__fmul_rn(a1[e], c[k][e]), __fmul_rn(a2[e], n[k][e]));
            o2[e] = __fadd_rn(__fmul_rn(a2[e], c[k][e]), __fmul_rn(a1[e], n[k][e]));
          }
        } else {  // pairs (2p, 2p + 1) within each half; pairs 0-3 in the first, 4-7 in the second
          for (int p = 0; p < 4; ++p) {
            const float c1 = c[k][p], n1 = n[k][p], c2 = c[k][4 + p], n2 = n[k][4 + p];
            o1[2 * p] = __fsub_rn(__fmul_rn(a1[2 * p], c1), __fmul_rn(a1[2 * p + 1], n1));
            o1[2 * p + 1] = __fadd_rn(__fmul_rn(a1[2 * p + 1], c1), __fmul_rn(a1[2 * p], n1));
            o2[2 * p] = __fsub_rn(__fmul_rn(a2[2 * p], c2), __fmul_rn(a2[2 * p + 1], n2));
            o2[2 * p + 1] = __fadd_rn(__fmul_rn(a2[2 * p + 1], c2), __fmul_rn(a2[2 * p], n2));
          }
        }
        *reinterpret_cast<uint4*>(dst + lo[k]) = pack8(o1);
        *reinterpret_cast<uint4*>(dst + lo[k] + (kRotary == 1 ? half_head : 8)) = pack8(o2);
      }
    }
  }
}

// ---- General kernels (any even D, 4-byte aligned rows) ------------------------------------------------

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

// ---- Launch ---------------------------------------------------------------------------------------------

// A vector kernel's block for a row of `vecs` vectors: the fewest vectors per thread (1, 2, 4, ... up to
// max_per) that keep the block within kThreads, and the threads that takes, rounded up to whole warps.
// False when the row is longer than that.
bool row_shape(int64_t vecs, int max_per, int& threads, int& per) {
  for (per = 1; per <= max_per; per *= 2) {
    const int64_t t = (vecs + per - 1) / per;
    if (t <= kThreads) {
      threads = static_cast<int>((t + 31) / 32 * 32);
      return true;
    }
  }
  return false;
}

template <int kVecs>
void launch_rms_modulate_vec(const void* x, const void* scale1, const void* shift, void* out, int64_t rows,
                             int64_t tokens, int64_t D, int64_t mbs, int64_t mts, float eps, int threads,
                             cudaStream_t stream) {
  const int64_t blocks = (rows + kModRows - 1) / kModRows;
  rms_modulate_vec_kernel<kVecs><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(scale1),
      static_cast<const __nv_bfloat16*>(shift), static_cast<__nv_bfloat16*>(out), rows, static_cast<int>(D), tokens,
      mbs, mts, eps);
}

template <int kVecs, int kOuts>
void launch_gated_residual_rms_vec(const void* x, const void* y, const void* gate, const void* bias,
                                   void* x_out, const NormOutputs& outs, int64_t rows, int64_t tokens,
                                   int64_t D, int64_t gbs, int64_t gts, float eps, int threads,
                                   cudaStream_t stream) {
  const int64_t blocks = (rows + kModRows - 1) / kModRows;
  gated_residual_rms_vec_kernel<kVecs, kOuts><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(y),
      static_cast<const __nv_bfloat16*>(gate), static_cast<const __nv_bfloat16*>(bias),
      static_cast<__nv_bfloat16*>(x_out), outs, rows, static_cast<int>(D), tokens, gbs, gts, eps);
}

template <int kOuts>
void launch_gated_residual_rms_vec(int per, const void* x, const void* y, const void* gate, const void* bias,
                                   void* x_out, const NormOutputs& outs, int64_t rows, int64_t tokens,
                                   int64_t D, int64_t gbs, int64_t gts, float eps, int threads,
                                   cudaStream_t stream) {
  const auto launch = per == 1   ? launch_gated_residual_rms_vec<1, kOuts>
                      : per == 2 ? launch_gated_residual_rms_vec<2, kOuts>
                                 : launch_gated_residual_rms_vec<4, kOuts>;
  launch(x, y, gate, bias, x_out, outs, rows, tokens, D, gbs, gts, eps, threads, stream);
}

template <int kRotary, int kUnits>
void launch_rms_rope_vec(const RopeInputs& in, float width, const float* cos, const float* sin, int64_t table_row,
                         int64_t half_head, int64_t batch, int64_t tokens, int64_t D, float eps, int threads,
                         cudaStream_t stream) {
  rms_rope_vec_kernel<kRotary, kUnits><<<static_cast<unsigned>(tokens), threads, 0, stream>>>(
      in, width, cos, sin, table_row, static_cast<int>(half_head), static_cast<int>(D), tokens, batch, eps);
}

template <int kUnits>
void launch_rms_rope_vec(int rotary, const RopeInputs& in, float width, const float* cos, const float* sin,
                         int64_t table_row, int64_t half_head, int64_t batch, int64_t tokens, int64_t D, float eps,
                         int threads, cudaStream_t stream) {
  const auto launch = rotary == 1   ? launch_rms_rope_vec<1, kUnits>
                      : rotary == 2 ? launch_rms_rope_vec<2, kUnits>
                                    : launch_rms_rope_vec<0, kUnits>;
  launch(in, width, cos, sin, table_row, half_head, batch, tokens, D, eps, threads, stream);
}

}  // namespace

bool rms_modulate_bf16(const void* x, const void* scale1, const void* shift, void* out, int64_t rows, int64_t tokens,
                       int64_t D, int64_t mod_batch_stride, int64_t mod_token_stride, float eps, void* stream) {
  if (rows == 0) return true;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  int threads = 0, per = 0;
  const bool vec = D % 8 == 0 && aligned16(x) && aligned16(out) &&
                   (scale1 == nullptr || (aligned16(scale1) && aligned16(shift) && mod_batch_stride % 8 == 0 &&
                                          mod_token_stride % 8 == 0)) &&
                   row_shape(D / 8, 8, threads, per);
  if (vec) {
    const auto launch = per == 1   ? launch_rms_modulate_vec<1>
                        : per == 2 ? launch_rms_modulate_vec<2>
                        : per == 4 ? launch_rms_modulate_vec<4>
                                   : launch_rms_modulate_vec<8>;
    launch(x, scale1, shift, out, rows, tokens, D, mod_batch_stride, mod_token_stride, eps, threads, st);
  } else {
    rms_modulate_kernel<<<static_cast<unsigned>(rows), kThreads, 0, st>>>(
        static_cast<const __nv_bfloat16*>(x), static_cast<const __nv_bfloat16*>(scale1),
        static_cast<const __nv_bfloat16*>(shift), static_cast<__nv_bfloat16*>(out), D, tokens, mod_batch_stride,
        mod_token_stride, eps);
  }
  return cudaGetLastError() == cudaSuccess;
}

bool gated_residual_rms_bf16(const void* x, const void* y, const void* gate, const void* bias, void* x_out,
                             int64_t rows, int64_t tokens, int64_t D, int64_t gate_batch_stride,
                             int64_t gate_token_stride, const RmsModulation* outputs, int count, float eps,
                             void* stream) {
  static_assert(kGatedResidualRmsMaxD == 8 * 4 * kThreads, "rows of at most 4 vectors a thread");
  if (count < 1 || count > kGatedResidualRmsOutputs) return false;
  bool fits =
      D % 8 == 0 && D <= kGatedResidualRmsMaxD && aligned16(x) &&
      (y == nullptr ||
       (aligned16(y) && aligned16(x_out) &&
        (gate == nullptr || (aligned16(gate) && gate_batch_stride % 8 == 0 && gate_token_stride % 8 == 0)) &&
        (bias == nullptr || aligned16(bias))));
  NormOutputs outs{};
  for (int j = 0; j < count; ++j) {
    const RmsModulation& o = outputs[j];
    fits = fits && aligned16(o.out) && (o.scale1 == nullptr) == (o.shift == nullptr) &&
           (o.scale1 == nullptr || (aligned16(o.scale1) && aligned16(o.shift) && o.batch_stride % 8 == 0 &&
                                    o.token_stride % 8 == 0));
    outs.scale1[j] = static_cast<const __nv_bfloat16*>(o.scale1);
    outs.shift[j] = static_cast<const __nv_bfloat16*>(o.shift);
    outs.out[j] = static_cast<__nv_bfloat16*>(o.out);
    outs.batch_stride[j] = o.batch_stride;
    outs.token_stride[j] = o.token_stride;
  }
  int threads = 0, per = 0;
  if (!fits || !row_shape(D / 8, 4, threads, per)) return false;
  if (rows == 0) return true;
  const auto launch = count == 1 ? launch_gated_residual_rms_vec<1> : launch_gated_residual_rms_vec<2>;
  launch(per, x, y, gate, bias, x_out, outs, rows, tokens, D, gate_batch_stride, gate_token_stride, eps,
         threads, static_cast<cudaStream_t>(stream));
  return cudaGetLastError() == cudaSuccess;
}

bool sum_squares_bf16(const void* x, float* out, int64_t rows, int64_t D, void* stream) {
  if (rows == 0) return true;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const __nv_bfloat16* xb = static_cast<const __nv_bfloat16*>(x);
  int threads = 0, per = 0;
  if (D % 8 == 0 && aligned16(x) && row_shape(D / 8, 8, threads, per)) {
    const auto kernel = per == 1   ? sum_squares_vec_kernel<1>
                        : per == 2 ? sum_squares_vec_kernel<2>
                        : per == 4 ? sum_squares_vec_kernel<4>
                                   : sum_squares_vec_kernel<8>;
    kernel<<<static_cast<unsigned>(rows), threads, 0, st>>>(xb, out, static_cast<int>(D));
  } else {
    sum_squares_kernel<<<static_cast<unsigned>(rows), kThreads, 0, st>>>(xb, out, D);
  }
  return cudaGetLastError() == cudaSuccess;
}

bool rms_rope_bf16(const RopeRows* inputs, int count, float width, const float* cos, const float* sin,
                   int64_t table_row, int rotary, int64_t half_head, int64_t batch, int64_t tokens, int64_t D,
                   float eps, void* stream) {
  if (count < 1 || count > kRopeInputs) return false;
  if (batch * tokens == 0) return true;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  int threads = 0, per = 0;
  // 16-element units: split rotary needs them inside a head's half; tables are read as float4.
  bool vec = D % 16 == 0 && (rotary != 1 || half_head % 8 == 0) &&
             (rotary == 0 || (aligned16(cos) && aligned16(sin) && table_row % 4 == 0)) &&
             row_shape(D / 16, 2, threads, per);
  RopeInputs in{};
  in.count = count;
  for (int j = 0; j < count; ++j) {
    const RopeRows& r = inputs[j];
    vec = vec && aligned16(r.x) && aligned16(r.out) && aligned16(r.weight);
    in.x[j] = static_cast<const __nv_bfloat16*>(r.x);
    in.weight[j] = static_cast<const __nv_bfloat16*>(r.weight);
    in.sumsq[j] = r.sumsq;
    in.out[j] = static_cast<__nv_bfloat16*>(r.out);
  }
  if (vec) {
    const auto launch = per == 1 ? launch_rms_rope_vec<1> : launch_rms_rope_vec<2>;
    launch(rotary, in, width, cos, sin, table_row, half_head, batch, tokens, D, eps, threads, st);
  } else {
    for (int j = 0; j < count; ++j)
      rms_rope_kernel<<<static_cast<unsigned>(batch * tokens), kThreads, 0, st>>>(
          in.x[j], in.weight[j], in.sumsq[j], width, cos, sin, table_row, rotary, half_head, in.out[j], D, tokens,
          batch, eps);
  }
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace ditgen::nn
