#pragma once
// Launchers of the fused elementwise passes (CUDA build only; no ATen in the .cu file).
#include <cstdint>

namespace ditgen::nn {

// out = x + gate * (y + bias) over contiguous bf16 [rows, D] x / y / out with D % 8 == 0 and 16-byte aligned
// pointers; gate (null: 1) rows of item b, token s at b * gate_batch_stride + s * gate_token_stride (both
// multiples of 8), bias (null: 0) [D]. rows = batch x tokens. False if the launch failed.
bool gated_residual_bf16(const void* x, const void* y, const void* gate, const void* bias, void* out, int64_t rows,
                         int64_t tokens, int64_t D, int64_t gate_batch_stride, int64_t gate_token_stride,
                         void* stream);

// out (contiguous bf16 [rows, Da + F]) row r = [a[r, :Da] | silu(gate[r, :F]) * up[r, :F]]; a row r at
// a + r * a_stride (a may be null: Da = 0), gate_up row r at gate_up + r * gu_stride with the gate half first.
// Da, F and both strides multiples of 8, pointers 16-byte aligned. False if the launch failed.
bool swiglu_concat_bf16(const void* a, int64_t a_stride, int64_t Da, const void* gate_up, int64_t gu_stride,
                        int64_t F, void* out, int64_t rows, void* stream);

}  // namespace ditgen::nn
