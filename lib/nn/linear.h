#pragma once
// A linear layer's weight, in the checkpoint's dtype or, under --fp8, as e4m3 with one scale per output
// channel. The FP8 path (CUDA build, Hopper) quantises the activations per row at call time and runs
// the product on the FP8 tensor cores with both scales applied in the GEMM's epilogue:
//   y[m, n] = sum_k x8[m, k] * w8[n, k] * scale_x[m] * scale_w[n].
#include <ATen/ATen.h>

#include <functional>
#include <utility>
#include <vector>

#include "lib/nn/ops.h"
#include "lib/nn/weights.h"

namespace ditgen::nn {

struct Linear {
  at::Tensor weight;        // [N, K] in the model dtype; undefined once quantised
  at::Tensor fp8_weight;    // [N, K] e4m3, row-major (passed to the GEMM as column-major [K, N])
  at::Tensor fp8_scale;     // [1, N] float32: weight[n, :] ~= fp8_weight[n, :] * fp8_scale[0, n]

  Linear() = default;
  explicit Linear(at::Tensor w) : weight(std::move(w)) {}
  bool is_fp8() const { return fp8_weight.defined(); }
  int64_t out_features() const { return is_fp8() ? fp8_weight.size(0) : weight.size(0); }
};

// x [..., K] -> [..., N] in x's dtype; `bias` [N] (optional) added.
at::Tensor linear(const at::Tensor& x, const Linear& l);
at::Tensor linear(const at::Tensor& x, const Linear& l, const at::Tensor& bias);

// linear(x, l, bias) written into `out` [..., N] (x's rows, x's dtype), a view such as one stream's rows of
// joint attention's v: the GEMM writes there itself where out's rows form one matrix (bf16 / fp32 weights);
// else the product is copied in.
void linear_into(const at::Tensor& out, const at::Tensor& x, const Linear& l, const at::Tensor& bias = {});

// gelu_tanh(x @ l^T + bias): on CUDA in bf16 / fp16 the GELU runs in the GEMM's epilogue (cuBLASLt, on
// the fp32 accumulator: one rounding instead of two, no extra pass over the 4x-wide hidden state);
// elsewhere, and for FP8 weights, the linear then at::gelu(tanh).
at::Tensor linear_gelu_tanh(const at::Tensor& x, const Linear& l, const at::Tensor& bias);

// While one lives (on this thread), consecutive FP8 linears reading the same unchanged input (an attention's
// q, k and v) quantise it once; no effect on other linears.
struct ReuseQuantisedInput {
  ReuseQuantisedInput();
  ~ReuseQuantisedInput();
  ReuseQuantisedInput(const ReuseQuantisedInput&) = delete;
  ReuseQuantisedInput& operator=(const ReuseQuantisedInput&) = delete;
};

// out(gelu_tanh(in(x) + in_bias)) without out's bias: a GELU MLP. bf16 on CUDA: the GELU in the first
// GEMM's epilogue (linear_gelu_tanh); FP8: in the second GEMM's activation quantiser (one pass over the
// hidden state instead of two); elsewhere the plain ops.
at::Tensor gelu_tanh_mlp(const at::Tensor& x, const Linear& in, const at::Tensor& in_bias, const Linear& out);

// [a | silu(gate) * up] @ l^T for a row-parallel projection after a SwiGLU MLP: `gate_up` [..., 2F] holds
// the gate then the up half, `a` [..., Da] (optional, undefined: none) comes first in the input. With an
// FP8 `l` the SwiGLU, the concatenation and the activation quantisation are one pass (CUDA, bf16); else
// the ATen ops.
at::Tensor swiglu_concat_linear(const at::Tensor& a, const at::Tensor& gate_up, const Linear& l);

// x + gate * (a @ l^T + bias): the residual stream after an attention's or an MLP's output projection. x [B, S, N],
// a [B, S, K]; gate [B, 1, N] (one per item) or undefined (1); bias [N] or undefined. `reduce` (the TP sum of a
// row-parallel projection) runs on the product before the residual. On the GPU, bf16 or fp32 weights, no gate,
// no reduce and a large enough x: one cuBLASLt GEMM that adds x in its epilogue (lib/nn/residual_gemm_cuda.h);
// else the linear, `reduce`, then gated_residual (DITGEN_FUSED_RESIDUAL=0 forces this, for measurements).
at::Tensor linear_residual(const at::Tensor& x, const at::Tensor& a, const Linear& l, const at::Tensor& bias,
                           const at::Tensor& gate, const std::function<void(at::Tensor&)>& reduce = {});
// linear_residual, and the RMS norms of its result that the next layers take, each modulated by its
// (1 + scale, shift) pair in `mods` (nn::gated_residual_rms): in the residual's own pass where it has one (a gate,
// `reduce`, FP8), else in one read of the GEMM's result. DITGEN_FUSED_RESIDUAL=0: every norm a pass of its own.
ResidualNorms linear_residual_norms(const at::Tensor& x, const at::Tensor& a, const Linear& l, const at::Tensor& bias,
                                    const at::Tensor& gate, const std::function<void(at::Tensor&)>& reduce,
                                    double eps, const std::vector<std::pair<at::Tensor, at::Tensor>>& mods);
// cuBLAS and cuBLASLt without a workspace, unless CUBLASLT_WORKSPACE_SIZE / CUBLAS_WORKSPACE_CONFIG are set
// (LibTorch's defaults: 32768 and :4096:8 on Hopper). With one, cuBLAS clears part of it before each of its Hopper
// GEMM kernels: LTX-2's step ran 961 memsets and their launch gaps (idle 4.8 -> 1.8 ms, 6-8 ms shorter a step on an
// H100), for the same GEMM kernels (bench/results/2026-12-07c_h100_side_stream). LibTorch reads both at its first
// GEMM: call this first thing in main.
void gemms_without_workspace();
// The DITGEN_FUSED_RESIDUAL switch: unset or 1 on, 0 off; any other value ends the run naming it (read once;
// call it at start-up).
bool fused_residual_on();
// How --fp8's GEMMs accumulate (DITGEN_FP8_FAST_ACCUM): unset or 1, in the tensor cores' own precision
// ("fast accumulation", as torchao's FP8 inference runs them); 0, with the partial sums promoted to fp32 at
// intervals. Any other value ends the run naming it (read once; call it at start-up).
bool fp8_fast_accumulation();
// The most rows one GPU GEMM of a weight of 2^26 elements or more takes (DITGEN_GEMM_ROWS, default 8192; 0: no
// limit): linear and linear_gelu_tanh run more as equal row chunks. A malformed value ends the run naming it
// (read once; call it at start-up).
int64_t gemm_row_limit();

// x + gate * (gelu_tanh_mlp(in_x, in, in_bias, out) + out_bias), `reduce` on the MLP's output first: a GELU
// MLP into the residual stream. FP8: the GELU in the second GEMM's quantiser (gelu_tanh_mlp); else the GELU
// in the first GEMM's epilogue and linear_residual.
at::Tensor gelu_tanh_mlp_residual(const at::Tensor& x, const at::Tensor& in_x, const Linear& in,
                                  const at::Tensor& in_bias, const Linear& out, const at::Tensor& out_bias,
                                  const at::Tensor& gate,
                                  const std::function<void(at::Tensor&)>& reduce = {});
// gelu_tanh_mlp_residual and the RMS norms of its result, as linear_residual_norms.
ResidualNorms gelu_tanh_mlp_residual_norms(const at::Tensor& x, const at::Tensor& in_x, const Linear& in,
                                           const at::Tensor& in_bias, const Linear& out, const at::Tensor& out_bias,
                                           const at::Tensor& gate, const std::function<void(at::Tensor&)>& reduce,
                                           double eps, const std::vector<std::pair<at::Tensor, at::Tensor>>& mods);
// x + gate * swiglu_concat_linear(a, gate_up, l), `reduce` on the product first: FP8 with the fused quantiser
// pass, else swiglu_concat and linear_residual.
at::Tensor swiglu_concat_residual(const at::Tensor& x, const at::Tensor& a, const at::Tensor& gate_up,
                                  const Linear& l, const at::Tensor& gate,
                                  const std::function<void(at::Tensor&)>& reduce = {});

// Whether this build runs FP8 linears on `device` ("" if it can, else why not, naming what to change).
std::string fp8_unavailable_reason(const at::Device& device);

// The e4m3 form of `l` when its shape suits the FP8 GEMM (both dims multiples of 16), else `l`
// unchanged. Per-output-channel scales from the weight's absolute maximum (computed in fp32), values
// rounded to nearest and saturated at +-448. The model-dtype weight is dropped.
Linear quantize_fp8(Linear l);

// An FP8 checkpoint's weight as it is stored (e4m3 + per-channel scales, WeightSource::load_fp8) as the
// FP8 linear, without a model-dtype copy; `w` unchanged in shape, the scales laid out as the GEMM takes
// them. `w`'s shape must suit the FP8 GEMM (fp8_gemm_shape). CUDA build only.
Linear linear_from_fp8(Fp8Weight w);
// Whether an [N, K] weight (this rank's slice) runs on the FP8 GEMM: both dims multiples of 16.
bool fp8_gemm_shape(int64_t N, int64_t K);

// The linear `name` of `wb` (full shape [N, K], sharded by `shard`): with `fp8`, an FP8 checkpoint's
// stored e4m3 weight and scales where the source holds them (no model-dtype copy), else the weight
// loaded in the model dtype and quantised (quantize_fp8); without `fp8`, the weight in the model dtype.
Linear load_linear(const Weights& wb, const std::string& name, const std::vector<int64_t>& full_shape,
                   const Shard& shard, bool fp8);

}  // namespace ditgen::nn
