#pragma once
// The FP8 linear and its quantisers (CUDA build only: LibTorch >= 2.1 names the e4m3 dtype).
#include <ATen/ATen.h>

namespace ditgen::nn {

// x [M, K] bf16/fp16/fp32 contiguous; w8 [N, K] e4m3; w_scale [1, N] float32; `bias` [N] (optional) added
// in the GEMM's epilogue where the library takes it. Returns [M, N] in x's dtype. `gelu_tanh_input`: the
// product of gelu_tanh(x), the GELU applied in the activation quantiser's pass. Inside a ReuseQuantisedInput
// scope (linear.h) the last input's quantised rows serve the next call that reads the same, unchanged tensor.
at::Tensor fp8_linear_cuda(const at::Tensor& x, const at::Tensor& w8, const at::Tensor& w_scale,
                           const at::Tensor& bias = {}, bool gelu_tanh_input = false);
// Enter / leave a ReuseQuantisedInput scope (lib/nn/linear.h) on this thread.
void fp8_reuse_scope_enter();
void fp8_reuse_scope_exit();
// [a | silu(gate) * up] @ w^T with the SwiGLU, concatenation and quantisation in one pass; undefined when
// the inputs do not suit it (not bf16 CUDA, unaligned rows, widths not multiples of 8, F too wide).
at::Tensor fp8_swiglu_concat_linear_cuda(const at::Tensor& a, const at::Tensor& gate_up, const at::Tensor& w8,
                                         const at::Tensor& w_scale);
// weight [N, K] -> (e4m3 [N, K], float32 [1, N]).
std::pair<at::Tensor, at::Tensor> fp8_quantize_weight_cuda(const at::Tensor& weight);
// An FP8 checkpoint's weight as the GEMM takes it: `bits` [N, K] uint8 (e4m3fn bit patterns) viewed as
// e4m3 (no copy), `scale` [N] float32 as [1, N].
std::pair<at::Tensor, at::Tensor> fp8_weight_from_bits_cuda(const at::Tensor& bits, const at::Tensor& scale);
// major * 10 + minor of the CUDA device.
int fp8_compute_capability(const at::Device& device);

}  // namespace ditgen::nn
