#pragma once
// Launcher of the fused LayerNorm + modulation kernel (CUDA build only; no ATen in the .cu file).
#include <cstdint>

namespace ditgen::nn {

// x, out: contiguous bf16 [rows, D]; scale1, shift: contiguous bf16 [rows / rows_per_batch, D] (one
// vector per batch item). D even; D % 8 == 0 with 16-byte aligned pointers takes the vectorised kernel
// (up to D = 16384). Returns false if the launch failed.
bool layer_norm_modulate_bf16(const void* x, const void* scale1, const void* shift, void* out, int64_t rows,
                              int64_t rows_per_batch, int64_t D, float eps, void* stream);

}  // namespace ditgen::nn
