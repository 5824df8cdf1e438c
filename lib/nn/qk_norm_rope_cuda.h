#pragma once
// Launcher of the fused QK RMSNorm + RoPE kernel (CUDA build only; no ATen in the .cu file).
#include <cstdint>

namespace ditgen::nn {

// x: bf16 [B, S, H, D] with strides (stride_b, stride_s, stride_h, 1); weight: bf16 [D]; freqs:
// complex64 [S, D/2] (interleaved cos, sin); out: bf16 [B, S, H, D], each item's [S, H, D] contiguous, item b
// at out + b * out_stride_b (elements: a slice of longer rows, e.g. joint attention's). D even. Returns false
// if the launch failed.
bool qk_norm_rope_bf16(const void* x, int64_t B, int64_t S, int64_t H, int64_t D, int64_t stride_b, int64_t stride_s,
                       int64_t stride_h, const void* weight, const void* freqs, float eps, void* out,
                       int64_t out_stride_b, void* stream);

}  // namespace ditgen::nn
