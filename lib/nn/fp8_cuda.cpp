#include "lib/nn/fp8_cuda.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAStream.h>

#include <atomic>

#include "lib/nn/fp8_quant_cuda.h"
#include "lib/nn/linear.h"
#include "lib/runtime/error.h"

namespace ditgen::nn {

namespace {

constexpr double kE4m3Max = 448.0;

// The last activation quantised and its e4m3 rows, kept only inside a ReuseQuantisedInput scope (an
// attention's q, k and v read the same input): reused while it is the same data: same storage (held, so its
// memory cannot pass to another tensor meanwhile), offset, shape and version (an in-place write bumps it).
struct QuantisedInput {
  at::Tensor x, x8, scale;
  int64_t version = -1;
  bool holds(const at::Tensor& t) const {
    return x.defined() && t.storage().is_alias_of(x.storage()) && t.storage_offset() == x.storage_offset() &&
           t.sizes() == x.sizes() && t.strides() == x.strides() && t._version() == version;
  }
};
thread_local QuantisedInput g_last_input;
thread_local int g_reuse_scopes = 0;

}  // namespace

at::Tensor fp8_linear_cuda(const at::Tensor& x, const at::Tensor& w8, const at::Tensor& w_scale,
                           const at::Tensor& bias, bool gelu_tanh_input) {
  const int64_t M = x.size(0), K = x.size(1);
  DITGEN_CHECK(K == w8.size(1), "FP8 linear: input width {} but weight [{}, {}]", K, w8.size(0), w8.size(1));
  at::Tensor x8, x_scale;
  const bool fused = x.scalar_type() == at::kBFloat16 && x.is_contiguous() && K % 8 == 0 &&
                     reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
  if (g_reuse_scopes > 0 && !gelu_tanh_input && g_last_input.holds(x)) {
    x8 = g_last_input.x8;
    x_scale = g_last_input.scale;
  } else if (fused) {
    x8 = at::empty({M, K}, x.options().dtype(at::kFloat8_e4m3fn));
    x_scale = at::empty({M, 1}, x.options().dtype(at::kFloat));
    const bool ok = quantize_rows_fp8_bf16(x.data_ptr(), x8.data_ptr(), x_scale.data_ptr<float>(), M, K,
                                           c10::cuda::getCurrentCUDAStream(x.device().index()).stream(),
                                           gelu_tanh_input);
    DITGEN_CHECK(ok, "the FP8 activation quantiser failed to launch");
  } else {
    at::Tensor xf = (gelu_tanh_input ? at::gelu(x, "tanh") : x).to(at::kFloat);
    at::Tensor amax = xf.abs().amax(1, /*keepdim=*/true);
    x_scale = at::where(amax > 0, amax / kE4m3Max, at::ones_like(amax));
    x8 = (xf / x_scale).clamp(-kE4m3Max, kE4m3Max).to(at::kFloat8_e4m3fn);
  }
  if (g_reuse_scopes > 0 && !gelu_tanh_input) g_last_input = {x, x8, x_scale, x._version()};
  const at::ScalarType out = x.scalar_type() == at::kFloat ? at::kBFloat16 : x.scalar_type();
  // The bias in the epilogue (one rounding, no extra pass) where the GEMM takes one of the output's dtype;
  // a refusal turns that off for the process.
  static std::atomic<bool> bias_epilogue{true};
  at::Tensor y;
  if (bias.defined() && bias_epilogue && bias.scalar_type() == out) {
    try {
      y = at::_scaled_mm(x8, w8.t(), x_scale, w_scale, bias, std::nullopt, out, fp8_fast_accumulation());
    } catch (const c10::Error&) {
      bias_epilogue = false;
    }
  }
  if (!y.defined()) {
    y = at::_scaled_mm(x8, w8.t(), x_scale, w_scale, std::nullopt, std::nullopt, out, fp8_fast_accumulation());
    if (bias.defined()) y.add_(bias);
  }
  return y.scalar_type() == x.scalar_type() ? y : y.to(x.scalar_type());
}

at::Tensor fp8_swiglu_concat_linear_cuda(const at::Tensor& a, const at::Tensor& gate_up, const at::Tensor& w8,
                                         const at::Tensor& w_scale) {
  const int64_t F = gate_up.size(-1) / 2, Da = a.defined() ? a.size(-1) : 0;
  const at::Tensor gu = gate_up.reshape({-1, 2 * F});  // a view for the usual [B, S, W].narrow(-1, ...)
  const at::Tensor a2 = a.defined() ? a.reshape({-1, Da}) : at::Tensor();
  const int64_t M = gu.size(0);
  auto aligned = [](const at::Tensor& t) {
    return t.scalar_type() == at::kBFloat16 && t.is_cuda() && t.stride(1) == 1 && t.stride(0) % 8 == 0 &&
           reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  };
  if (!aligned(gu) || (a2.defined() && (!aligned(a2) || a2.size(0) != M)) || F % 8 != 0 || Da % 8 != 0 ||
      F * 2 > 200 * 1024 || w8.size(1) != Da + F)
    return at::Tensor();
  at::Tensor x8 = at::empty({M, Da + F}, gu.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor x_scale = at::empty({M, 1}, gu.options().dtype(at::kFloat));
  const bool ok = swiglu_concat_quantize_fp8_bf16(a2.defined() ? a2.data_ptr() : nullptr, a2.defined() ? a2.stride(0) : 0,
                                                  Da, gu.data_ptr(), gu.stride(0), F, x8.data_ptr(),
                                                  x_scale.data_ptr<float>(), M,
                                                  c10::cuda::getCurrentCUDAStream(gu.device().index()).stream());
  DITGEN_CHECK(ok, "the fused SwiGLU + FP8 quantiser failed to launch");
  at::Tensor y = at::_scaled_mm(x8, w8.t(), x_scale, w_scale, std::nullopt, std::nullopt, at::kBFloat16, fp8_fast_accumulation());
  auto shape = gate_up.sizes().vec();
  shape.back() = w8.size(0);
  return y.view(shape);
}

void fp8_reuse_scope_enter() { ++g_reuse_scopes; }
void fp8_reuse_scope_exit() {
  if (--g_reuse_scopes == 0) g_last_input = {};
}

std::pair<at::Tensor, at::Tensor> fp8_quantize_weight_cuda(const at::Tensor& weight) {
  at::Tensor wf = weight.to(at::kFloat);
  at::Tensor amax = wf.abs().amax(1, /*keepdim=*/true);                        // [N, 1]
  at::Tensor scale = at::where(amax > 0, amax / kE4m3Max, at::ones_like(amax));  // [N, 1]
  at::Tensor w8 = (wf / scale).clamp(-kE4m3Max, kE4m3Max).to(at::kFloat8_e4m3fn).contiguous();
  return {w8, scale.t().contiguous()};  // scale [1, N]
}

std::pair<at::Tensor, at::Tensor> fp8_weight_from_bits_cuda(const at::Tensor& bits, const at::Tensor& scale) {
  DITGEN_CHECK(bits.scalar_type() == at::kByte && bits.is_cuda() && scale.is_cuda(),
               "internal: FP8 weight bits must be uint8 on the GPU");
  // Same element size: a reinterpretation of the stored bytes, as the FP8 GEMM reads them.
  at::Tensor w8 = bits.contiguous().view(at::kFloat8_e4m3fn);
  return {w8, scale.to(at::kFloat).reshape({1, -1}).contiguous()};
}

int fp8_compute_capability(const at::Device& device) {
  const auto* prop = at::cuda::getDeviceProperties(device.index() < 0 ? 0 : device.index());
  return prop->major * 10 + prop->minor;
}

}  // namespace ditgen::nn
