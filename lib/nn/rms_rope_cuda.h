#pragma once
// Launchers of the fused RMS-norm kernels (CUDA build only; no ATen in the .cu file). All rows are
// contiguous bf16 [rows, D] with D even; each returns false if the launch failed.
#include <cstdint>

namespace ditgen::nn {

// Weightless RMS norm, then out = shift + norm * scale1 where scale1 is non-null. rows = batch x tokens;
// the modulation row of (b, s) starts at b * mod_batch_stride + s * mod_token_stride.
bool rms_modulate_bf16(const void* x, const void* scale1, const void* shift, void* out, int64_t rows, int64_t tokens,
                       int64_t D, int64_t mod_batch_stride, int64_t mod_token_stride, float eps, void* stream);

// One output of gated_residual_rms_bf16: out = shift + norm * scale1 (scale1 and shift null: the norm alone),
// the modulation row of (b, s) at b * batch_stride + s * token_stride.
struct RmsModulation {
  const void* scale1 = nullptr;
  const void* shift = nullptr;
  void* out = nullptr;
  int64_t batch_stride = 0, token_stride = 0;
};
constexpr int kGatedResidualRmsOutputs = 2;      // the most outputs of one pass
constexpr int64_t kGatedResidualRmsMaxD = 8192;  // the longest row it keeps in registers (4 vectors a thread)

// x_out = x + gate * (y + bias) as gated_residual_bf16 rounds it (y null: x itself, gate and bias unused,
// x_out not written), then rms_modulate_bf16 of that row into each of `count` outputs (1 to
// kGatedResidualRmsOutputs): the same values as those two launchers, reading x and y once. Vector form only:
// D a multiple of 8 up to kGatedResidualRmsMaxD, every pointer 16-byte aligned, gate (null: 1; rows as in
// gated_residual_bf16) and modulation strides multiples of 8, bias (null: 0) [D]. False when the rows do not
// fit that (nothing launched: the caller composes the two) or the launch failed.
bool gated_residual_rms_bf16(const void* x, const void* y, const void* gate, const void* bias, void* x_out,
                             int64_t rows, int64_t tokens, int64_t D, int64_t gate_batch_stride,
                             int64_t gate_token_stride, const RmsModulation* outputs, int count, float eps,
                             void* stream);

// out[row] = sum of the row's squares, in fp32.
bool sum_squares_bf16(const void* x, float* out, int64_t rows, int64_t D, void* stream);

// One tensor x [batch, tokens, D] for rms_rope_bf16: its norm weight [D], its rows' sums of squares (null:
// the kernel's own) and where its result goes.
struct RopeRows {
  const void* x;
  const void* weight;
  const float* sumsq;
  void* out;
};
constexpr int kRopeInputs = 2;  // the most tensors of one pass (a self-attention's q and k)

// RMS norm with each input's `weight` over a mean square of sumsq[row] / width (sumsq null: this row's own,
// width D), then rotary 0 none, 1 split halves per head (head = 2 x half_head; tables [tokens, table_row]
// with one entry per pair), 2 interleaved pairs (tables with each pair's entry repeated). Up to kRopeInputs
// tensors of the same shape share the tables, which the vector kernel then reads once for all of them.
bool rms_rope_bf16(const RopeRows* inputs, int count, float width, const float* cos, const float* sin,
                   int64_t table_row, int rotary, int64_t half_head, int64_t batch, int64_t tokens, int64_t D,
                   float eps, void* stream);

}  // namespace ditgen::nn
