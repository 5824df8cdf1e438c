#include "lib/nn/linear.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <string>

#include "lib/io/safetensors.h"
#include "lib/nn/ops.h"
#include "lib/runtime/env.h"
#include "lib/runtime/error.h"
#ifdef DITGEN_CUDA
#include "lib/nn/fp8_cuda.h"
#include "lib/nn/residual_gemm_cuda.h"
#endif

namespace ditgen::nn {

namespace {

at::Tensor fp8_linear(const at::Tensor& x, const Linear& l, const at::Tensor& bias, bool gelu_tanh_input = false) {
#ifdef DITGEN_CUDA
  const int64_t K = x.size(-1);
  auto shape = x.sizes().vec();
  shape.back() = l.fp8_weight.size(0);
  return fp8_linear_cuda(x.reshape({-1, K}).contiguous(), l.fp8_weight, l.fp8_scale, bias, gelu_tanh_input)
      .view(shape);
#else
  fail("an FP8 linear in a build without CUDA");
#endif
}

using Gemm = std::function<void(const at::Tensor&, at::Tensor&)>;

// Whether M rows of x through the weight w run in row chunks: a CUDA GEMM with a weight of at least 2^26
// elements and more than gemm_row_limit() rows.
bool in_chunks(const at::Tensor& x, int64_t M, const at::Tensor& w) {
  const int64_t limit = gemm_row_limit();
  return x.is_cuda() && limit > 0 && M > limit && w.dim() == 2 && w.numel() >= (int64_t{1} << 26);
}

// gemm(rows, out) over `rows` [M, K] into `out` [M, N] (any row stride): where in_chunks, in equal row chunks
// written into row slices of `out` (each chunk's product by the kernel cuBLAS picks for the chunk's shape);
// else whole.
void gemm_in_rows(const at::Tensor& rows, const at::Tensor& w, at::Tensor out, const Gemm& gemm) {
  const int64_t limit = gemm_row_limit(), M = rows.size(0);
  if (!in_chunks(rows, M, w)) {
    gemm(rows, out);
    return;
  }
  const int64_t chunks = (M + limit - 1) / limit, per = (M + chunks - 1) / chunks;
  for (int64_t r = 0; r < M; r += per) {
    at::Tensor o = out.narrow(0, r, std::min(per, M - r));
    gemm(rows.narrow(0, r, o.size(0)), o);
  }
}

// x's rows' products [..., N] through gemm_in_rows where its row chunks apply; undefined elsewhere (the
// caller runs its whole GEMM).
at::Tensor in_row_chunks(const at::Tensor& x, const at::Tensor& w, const Gemm& gemm) {
  const int64_t K = x.size(-1), N = w.size(0), M = K > 0 ? x.numel() / K : 0;
  if (!in_chunks(x, M, w)) return {};
  auto shape = x.sizes().vec();
  shape.back() = N;
  at::Tensor out = at::empty({M, N}, x.options());
  gemm_in_rows(x.reshape({M, K}), w, out, gemm);
  return out.view(shape);
}

// `t` [..., N] (last dim contiguous) as a matrix [M, N] over the same memory, where its leading dims merge
// into one of equal row stride; undefined where they do not (rows of several items in a longer sequence).
at::Tensor as_matrix(const at::Tensor& t) {
  if (t.dim() < 2 || t.stride(-1) != 1) return {};
  for (int64_t i = t.dim() - 2; i > 0; --i)
    if (t.size(i - 1) != 1 && t.stride(i - 1) != t.stride(i) * t.size(i)) return {};
  const int64_t N = t.size(-1);
  return t.as_strided({N > 0 ? t.numel() / N : 0, N}, {t.stride(-2), 1});
}

}  // namespace

// cuBLAS's kernel for LTX-2's feed-forward at both CFG branches' 12288 rows is 2-5 % slower than its kernel
// for half of them, run twice (bench/probes/cublaslt_algos.cu on an H100: K 16384 2.08 ms against 2 x 0.99 ms).
int64_t gemm_row_limit() {
  static const int64_t limit =
      runtime::env_whole_number("DITGEN_GEMM_ROWS", 8192, 0, "a whole number of rows (0: no limit)");
  return limit;
}

at::Tensor linear(const at::Tensor& x, const Linear& l) {
  if (l.is_fp8()) return fp8_linear(x, l, at::Tensor());
  const at::Tensor w = l.weight;
  if (at::Tensor y = in_row_chunks(x, w, [&](const at::Tensor& a, at::Tensor& o) { at::mm_out(o, a, w.t()); });
      y.defined())
    return y;
  return at::linear(x, w);
}

at::Tensor linear(const at::Tensor& x, const Linear& l, const at::Tensor& bias) {
  if (l.is_fp8()) return fp8_linear(x, l, bias);
  const at::Tensor w = l.weight;
  if (bias.defined() && bias.dim() == 1) {
    auto gemm = [&](const at::Tensor& a, at::Tensor& o) { at::addmm_out(o, bias, a, w.t()); };
    if (at::Tensor y = in_row_chunks(x, w, gemm); y.defined()) return y;
  }
  return at::linear(x, w, bias);
}

void linear_into(const at::Tensor& out, const at::Tensor& x, const Linear& l, const at::Tensor& bias) {
  const int64_t K = x.size(-1), N = l.out_features(), M = K > 0 ? x.numel() / K : 0;
  DITGEN_CHECK(out.size(-1) == N && out.numel() == M * N && out.scalar_type() == x.scalar_type(),
               "linear_into: output {} {} for {} rows of {} features", io::shape_str(out.sizes()),
               c10::toString(out.scalar_type()), M, N);
  at::Tensor matrix = as_matrix(out);
  if (!l.is_fp8() && matrix.defined() && M > 0 && (!bias.defined() || bias.dim() == 1)) {
    const at::Tensor w = l.weight;
    gemm_in_rows(x.reshape({M, K}), w, matrix, [&](const at::Tensor& a, at::Tensor& o) {
      if (bias.defined())
        at::addmm_out(o, bias, a, w.t());
      else
        at::mm_out(o, a, w.t());
    });
    return;
  }
  out.copy_(linear(x, l, bias).view(out.sizes()));
}

at::Tensor linear_gelu_tanh(const at::Tensor& x, const Linear& l, const at::Tensor& bias) {
  const bool epilogue = x.is_cuda() && !l.is_fp8() && (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf) &&
                        bias.defined() && bias.dim() == 1 && x.numel() > 0;
  if (!epilogue) return at::gelu(linear(x, l, bias), "tanh");
  const at::Tensor w = l.weight;
  auto gemm = [&](const at::Tensor& a, at::Tensor& o) {
    at::_addmm_activation_out(o, bias, a, w.t(), 1, 1, /*use_gelu=*/true);
  };
  if (at::Tensor y = in_row_chunks(x, w, gemm); y.defined()) return y;
  auto shape = x.sizes().vec();
  shape.back() = w.size(0);
  return at::_addmm_activation(bias, x.reshape({-1, x.size(-1)}), w.t(), 1, 1, /*use_gelu=*/true).view(shape);
}

#ifdef DITGEN_CUDA
ReuseQuantisedInput::ReuseQuantisedInput() { fp8_reuse_scope_enter(); }
ReuseQuantisedInput::~ReuseQuantisedInput() { fp8_reuse_scope_exit(); }
#else
ReuseQuantisedInput::ReuseQuantisedInput() = default;
ReuseQuantisedInput::~ReuseQuantisedInput() = default;
#endif

at::Tensor gelu_tanh_mlp(const at::Tensor& x, const Linear& in, const at::Tensor& in_bias, const Linear& out) {
  if (in.is_fp8() && out.is_fp8() && x.is_cuda()) return fp8_linear(linear(x, in, in_bias), out, {}, true);
  return linear(linear_gelu_tanh(x, in, in_bias), out);
}

at::Tensor swiglu_concat_linear(const at::Tensor& a, const at::Tensor& gate_up, const Linear& l) {
#ifdef DITGEN_CUDA
  if (l.is_fp8()) {
    at::Tensor y = fp8_swiglu_concat_linear_cuda(a, gate_up, l.fp8_weight, l.fp8_scale);
    if (y.defined()) return y;  // else the shapes or layout did not suit the fused pass
  }
#endif
  return linear(swiglu_concat(a, gate_up), l);
}

bool fp8_fast_accumulation() {
  static const bool on = runtime::env_switch(
      "DITGEN_FP8_FAST_ACCUM", true,
      "1 (FP8 GEMMs accumulate in the tensor cores' precision) or 0 (partial sums promoted to fp32)");
  return on;
}

void gemms_without_workspace() {
  setenv("CUBLASLT_WORKSPACE_SIZE", "0", /*overwrite=*/0);
  setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0", /*overwrite=*/0);
}

bool fused_residual_on() {
  static const bool on = runtime::env_switch("DITGEN_FUSED_RESIDUAL", true,
                                             "1 (the residual in the GEMM's epilogue) or 0 (apart)");
  return on;
}

namespace {

// x + a @ l^T + bias as one cuBLASLt GEMM with x in its epilogue, where that applies (linear_residual).
at::Tensor epilogue_residual(const at::Tensor& x, const at::Tensor& a, const Linear& l, const at::Tensor& bias,
                             const at::Tensor& gate, const std::function<void(at::Tensor&)>& reduce) {
#ifdef DITGEN_CUDA
  // Below about a million elements the separate pass costs a few microseconds: not worth another GEMM plan.
  constexpr int64_t kMinElements = 1 << 20;
  const at::ScalarType dt = x.scalar_type();
  const bool fits = !reduce && !gate.defined() && fused_residual_on() && !l.is_fp8() && x.is_cuda() &&
                    x.numel() >= kMinElements && (dt == at::kBFloat16 || dt == at::kFloat) &&
                    l.weight.scalar_type() == dt && a.scalar_type() == dt && x.dim() == 3 && a.dim() == 3 &&
                    a.size(0) == x.size(0) && a.size(1) == x.size(1) && x.is_contiguous() && a.is_contiguous() &&
                    l.weight.is_contiguous() &&
                    (!bias.defined() || (bias.scalar_type() == dt && bias.numel() == x.size(2)));
  if (fits) {
    at::Tensor out = at::empty_like(x);
    auto rows = [](const at::Tensor& t) { return t.view({-1, t.size(2)}); };
    if (residual_gemm_cuda(rows(out), rows(x), rows(a), l.weight, bias)) return out;
    // else cuBLASLt had no algorithm for the shape: the plain ops
  }
#else
  (void)x, (void)a, (void)l, (void)bias, (void)gate, (void)reduce;
#endif
  return {};
}

}  // namespace

namespace {

// x + gate * (y + bias) (y undefined: x as it is) and the norms of it by `mods` (none: the residual alone):
// in one pass (gated_residual_rms), or apart with DITGEN_FUSED_RESIDUAL=0, for measurements.
ResidualNorms residual_norms(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, const at::Tensor& bias,
                             double eps, const std::vector<std::pair<at::Tensor, at::Tensor>>& mods) {
  if (!mods.empty() && fused_residual_on()) return gated_residual_rms(x, y, gate, bias, eps, mods);
  ResidualNorms r{y.defined() ? gated_residual(x, y, gate, bias) : x, {}};
  for (const auto& [scale1, shift] : mods) r.norms.push_back(rms_modulate(r.x, eps, scale1, shift));
  return r;
}

}  // namespace

at::Tensor linear_residual(const at::Tensor& x, const at::Tensor& a, const Linear& l, const at::Tensor& bias,
                           const at::Tensor& gate, const std::function<void(at::Tensor&)>& reduce) {
  return linear_residual_norms(x, a, l, bias, gate, reduce, 0, {}).x;
}

ResidualNorms linear_residual_norms(const at::Tensor& x, const at::Tensor& a, const Linear& l, const at::Tensor& bias,
                                    const at::Tensor& gate, const std::function<void(at::Tensor&)>& reduce,
                                    double eps, const std::vector<std::pair<at::Tensor, at::Tensor>>& mods) {
  // In the epilogue: the norms in one read of the result.
  if (at::Tensor out = epilogue_residual(x, a, l, bias, gate, reduce); out.defined())
    return residual_norms(out, {}, {}, {}, eps, mods);
  at::Tensor y = linear(a, l);
  if (reduce) reduce(y);
  return residual_norms(x, y, gate, bias, eps, mods);
}

at::Tensor gelu_tanh_mlp_residual(const at::Tensor& x, const at::Tensor& in_x, const Linear& in,
                                  const at::Tensor& in_bias, const Linear& out, const at::Tensor& out_bias,
                                  const at::Tensor& gate,
                                  const std::function<void(at::Tensor&)>& reduce) {
  return gelu_tanh_mlp_residual_norms(x, in_x, in, in_bias, out, out_bias, gate, reduce, 0, {}).x;
}

ResidualNorms gelu_tanh_mlp_residual_norms(const at::Tensor& x, const at::Tensor& in_x, const Linear& in,
                                           const at::Tensor& in_bias, const Linear& out, const at::Tensor& out_bias,
                                           const at::Tensor& gate, const std::function<void(at::Tensor&)>& reduce,
                                           double eps, const std::vector<std::pair<at::Tensor, at::Tensor>>& mods) {
  if (!out.is_fp8())
    return linear_residual_norms(x, linear_gelu_tanh(in_x, in, in_bias), out, out_bias, gate, reduce, eps, mods);
  at::Tensor y = gelu_tanh_mlp(in_x, in, in_bias, out);
  if (reduce) reduce(y);
  return residual_norms(x, y, gate, out_bias, eps, mods);
}

at::Tensor swiglu_concat_residual(const at::Tensor& x, const at::Tensor& a, const at::Tensor& gate_up,
                                  const Linear& l, const at::Tensor& gate,
                                  const std::function<void(at::Tensor&)>& reduce) {
  if (!l.is_fp8()) return linear_residual(x, swiglu_concat(a, gate_up), l, {}, gate, reduce);
  at::Tensor y = swiglu_concat_linear(a, gate_up, l);
  if (reduce) reduce(y);
  return gated_residual(x, y, gate, {});
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

bool fp8_gemm_shape(int64_t N, int64_t K) { return N > 0 && N % 16 == 0 && K % 16 == 0; }

Linear quantize_fp8(Linear l) {
  if (l.is_fp8() || !l.weight.defined()) return l;
  if (l.weight.dim() != 2 || !fp8_gemm_shape(l.weight.size(0), l.weight.size(1)))
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

Linear linear_from_fp8(Fp8Weight w) {
  DITGEN_CHECK(w.bits.dim() == 2 && fp8_gemm_shape(w.bits.size(0), w.bits.size(1)) && w.scale.dim() == 1 &&
                   w.scale.size(0) == w.bits.size(0),
               "internal: an FP8 weight {} with {} scales does not suit the FP8 GEMM", io::shape_str(w.bits.sizes()),
               w.scale.numel());
#ifdef DITGEN_CUDA
  auto [w8, scale] = fp8_weight_from_bits_cuda(w.bits, w.scale);
  Linear l;
  l.fp8_weight = std::move(w8);
  l.fp8_scale = std::move(scale);
  return l;
#else
  fail("{}", fp8_unavailable_reason(w.bits.device()));
#endif
}

Linear load_linear(const Weights& wb, const std::string& name, const std::vector<int64_t>& full_shape,
                   const Shard& shard, bool fp8) {
  if (fp8) {
    // An FP8 checkpoint's weight goes to the GEMM as stored; one that the GEMM cannot take (a slice
    // width not a multiple of 16) is read dequantised below and stays in the model dtype.
    const io::Slice slice = wb.slice_for(wb.key(name), full_shape, shard);
    int64_t n = full_shape.at(0), k = full_shape.at(1);
    if (!slice.is_whole()) {
      int64_t len = 0;
      for (auto [s, l] : slice.ranges) len += l;
      (slice.dim == 0 ? n : k) = len;
    }
    if (fp8_gemm_shape(n, k))
      if (auto w = wb.get_fp8(name, full_shape, shard)) {
        spdlog::debug("{}: the checkpoint's e4m3 weight [{}, {}] as stored", wb.key(name), n, k);
        return linear_from_fp8(std::move(*w));
      }
    return quantize_fp8(Linear(wb.get(name, full_shape, shard)));
  }
  return Linear(wb.get(name, full_shape, shard));
}

}  // namespace ditgen::nn
