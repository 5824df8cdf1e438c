#pragma once
// The residual stream's update after an output projection, x + (a @ w^T + bias), as one cuBLASLt GEMM (CUDA
// build only): x is the GEMM's C operand (beta = 1) and the bias its epilogue, so the projection's output is
// never written and read back by a separate pass. (A gated residual, x + gate * (...), would need a
// per-column alpha with beta = 1, for which cuBLASLt 13.1 offers no algorithm on an H100:
// bench/probes/cublaslt_residual.cu.)
#include <ATen/ATen.h>

namespace ditgen::nn {

// out = x + a @ w^T + bias. x, out [M, N] and a [M, K] contiguous, w [N, K] contiguous, all bf16 or all fp32 on
// one GPU; bias [N] (or undefined) in that dtype. False when cuBLASLt offers no algorithm for it (the caller
// runs the GEMM and the residual apart); a failure of the library ends the run.
bool residual_gemm_cuda(const at::Tensor& out, const at::Tensor& x, const at::Tensor& a, const at::Tensor& w,
                        const at::Tensor& bias);

}  // namespace ditgen::nn
