#pragma once
// Launcher of the fused gated residual (CUDA build only; no ATen in the .cu file).
#include <cstdint>

namespace ditgen::nn {

// out = x + gate * (y + bias) over contiguous bf16 [rows, D] x / y / out with D % 8 == 0 and 16-byte aligned
// pointers; gate (null: 1) rows of item b, token s at b * gate_batch_stride + s * gate_token_stride (both
// multiples of 8), bias (null: 0) [D]. rows = batch x tokens. False if the launch failed.
bool gated_residual_bf16(const void* x, const void* y, const void* gate, const void* bias, void* out, int64_t rows,
                         int64_t tokens, int64_t D, int64_t gate_batch_stride, int64_t gate_token_stride,
                         void* stream);

}  // namespace ditgen::nn
