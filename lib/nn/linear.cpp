#include "lib/nn/linear.h"

#include "lib/runtime/error.h"
#ifdef DITGEN_CUDA
#include "lib/nn/fp8_cuda.h"
#endif

namespace ditgen::nn {

at::Tensor linear(const at::Tensor& x, const Linear& l) {
  if (!l.is_fp8()) return at::linear(x, l.weight);
#ifdef DITGEN_CUDA
  const int64_t K = x.size(-1);
  auto shape = x.sizes().vec();
  shape.back() = l.fp8_weight.size(0);
  return fp8_linear_cuda(x.reshape({-1, K}).contiguous(), l.fp8_weight, l.fp8_scale).view(shape);
#else
  fail("an FP8 linear in a build without CUDA");
#endif
}

at::Tensor linear(const at::Tensor& x, const Linear& l, const at::Tensor& bias) {
  if (!l.is_fp8()) return at::linear(x, l.weight, bias);
  return linear(x, l).add_(bias);
}

at::Tensor swiglu_concat_linear(const at::Tensor& a, const at::Tensor& gate_up, const Linear& l) {
  const int64_t F = gate_up.size(-1) / 2;
#ifdef DITGEN_CUDA
  if (l.is_fp8()) {
    at::Tensor y = fp8_swiglu_concat_linear_cuda(a, gate_up, l.fp8_weight, l.fp8_scale);
    if (y.defined()) return y;  // else the shapes or layout did not suit the fused pass
  }
#endif
  at::Tensor h = at::silu(gate_up.narrow(-1, 0, F)) * gate_up.narrow(-1, F, F);
  return linear(a.defined() ? at::cat({a, h}, -1) : h, l);
}

std::string fp8_unavailable_reason(const at::Device& device) {
#ifdef DITGEN_CUDA
  if (!device.is_cuda()) return "--fp8 runs the linears on the GPU's FP8 tensor cores: it needs --device cuda";
  const int cc = fp8_compute_capability(device);
  if (cc < 89)
    return "--fp8 needs FP8 tensor cores (compute capability 8.9 or newer: Ada, Hopper); this GPU is " +
           std::to_string(cc / 10) + "." + std::to_string(cc % 10);
  return "";
#else
  return "--fp8 needs the CUDA build of ditgen (this build is CPU-only: FP8 matmuls run on the GPU's tensor cores); "
         "drop --fp8 here";
#endif
}

Linear quantize_fp8(Linear l) {
  if (l.is_fp8() || !l.weight.defined()) return l;
  if (l.weight.dim() != 2 || l.weight.size(0) % 16 != 0 || l.weight.size(1) % 16 != 0 || l.weight.size(0) == 0)
    return l;  // the FP8 GEMM needs K and N multiples of 16: this one stays in the model dtype
#ifdef DITGEN_CUDA
  auto [w8, scale] = fp8_quantize_weight_cuda(l.weight);
  Linear q;
  q.fp8_weight = std::move(w8);
  q.fp8_scale = std::move(scale);
  return q;
#else
  fail("{}", fp8_unavailable_reason(l.weight.device()));
#endif
}

}  // namespace ditgen::nn
