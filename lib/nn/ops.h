#pragma once
// Thin helpers over ATen for the layers every model uses. Activations are [B, S, ...] row-major;
// attention takes the diffusers layout [B, S, H, D].
#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <utility>
#include <vector>

namespace ditgen::nn {

inline at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b = std::nullopt) {
  return b ? at::linear(x, w, *b) : at::linear(x, w);
}

// LayerNorm over the last dim without affine parameters (FLUX.2 blocks); statistics in fp32.
at::Tensor layer_norm(const at::Tensor& x, double eps);

// torch.nn.RMSNorm semantics: normalise in fp32, cast back, multiply by the weight.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);
// HF Llama/Mistral RMSNorm: normalise in fp32, cast to the input dtype, then multiply the weight.
at::Tensor rms_norm_cast_first(const at::Tensor& x, const at::Tensor& weight, double eps);

// Which fused kernel runs bf16/fp16 attention without a mask on the GPU. Measured on an H200 at FLUX.2's
// shape (48 heads x 128, 4608 tokens; bench/results/2026-12-02_h200_attention.md): cuDNN ~0.85 ms with or
// without the log-sum-exp (1.2x the matmul floor; SDPA's own choice is the same kernel), flash 1.6-1.7 ms,
// memory-efficient 3.1 ms. `auto` = cuDNN where it applies (head dim <= 128, multiple of 8) for both the
// plain and the Ring (log-sum-exp) path, else flash / SDPA's choice; a cuDNN refusal turns it off for
// the process with a warning. `flash` and `sdpa` are for A/B measurements (--attention). `fp8`: cuDNN's
// FP8 flash attention (lib/nn/attention_fp8_cuda.h) for attention of at least 2048 queries and keys
// (shorter ones are faster in bf16: the quantisers' passes cost more than FP8 saves) where it applies
// (bf16, Hopper, unmasked, head size a multiple of 16 up to 128), else as `auto`, with a warning naming
// what it declined. CPU runs use the fp32 math path.
enum class AttentionBackend { Auto, Flash, Sdpa, Fp8 };
// Fails (Error) for `fp8` in a build without FP8 attention, naming what the build needs.
void set_attention_backend(AttentionBackend backend);
// The --attention value in force ("auto", "flash", "sdpa", "fp8"), for the reports.
const char* attention_backend_name();

// Scaled dot-product attention. q [B, Sq, H, D], k/v [B, Sk, Hk, D] with H % Hk == 0 (grouped
// query heads: query head h uses key head h / (H/Hk)). `mask` (optional) is boolean, broadcastable
// to [B, H, Sq, Sk], true = attend; a query row that sees no key returns 0.
// Returns [B, Sq, H, D] in q's dtype.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask = std::nullopt);

// Attention that also returns the log-sum-exp of the scaled scores, [B, Sq, H] float32, for Ring
// attention's merge. No mask.
struct AttentionLse {
  at::Tensor out;  // [B, Sq, H, D], q's dtype
  at::Tensor lse;  // [B, Sq, H] float32
};
AttentionLse attention_with_lse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// Attention in which key j of batch item b takes part only where key_mask[b][j] is true
// (`key_mask` [B, Sk] bool, e.g. padded text tokens). The hidden keys are dropped per item, so the
// fused kernels without mask support still apply; an item that sees no key gets 0 (and an lse of
// -inf). `want_lse` false leaves `lse` undefined.
AttentionLse attention_visible_keys(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& key_mask, bool want_lse);

// The positions of the keys each batch item sees (long, on `device`; empty where it sees none) for a
// [B, Sk] bool mask on the CPU. Cached by the mask's contents (the last few masks): every block of a
// forward, and every step, passes the same mask, so the upload (a host-to-device copy, which waits for
// the stream) happens once rather than in every block.
const std::vector<at::Tensor>& visible_key_positions(const at::Tensor& key_mask, const at::Device& device);

// Interleaved-pair rotary embedding (FLUX.2 DiT): pair p of x [B, S, H, D] is rotated by the
// complex64 factor freqs[s, p] = cos + i sin ([S, D/2]); computed in fp32 as one complex product,
// returned in x's dtype.
at::Tensor rope_interleaved(const at::Tensor& x, const at::Tensor& freqs);
// shift + LayerNorm(x) * scale1 (no affine LN over the last dim; adaLN modulation with scale1 = 1 +
// scale already added): one fused kernel for bf16 on CUDA, layer_norm + addcmul elsewhere.
// x [B, S, D]; scale1, shift [B, 1, D].
at::Tensor layer_norm_modulate(const at::Tensor& x, const at::Tensor& scale1, const at::Tensor& shift, double eps);

// Per-head RMSNorm (torch.nn.RMSNorm with `weight` [D]) followed by rope_interleaved: one fused
// kernel for bf16 on CUDA, the ATen composition elsewhere. x [B, S, H, D] (last dim contiguous).
at::Tensor qk_norm_rope(const at::Tensor& x, const at::Tensor& weight, double eps, const at::Tensor& freqs);
// qk_norm_rope written into `out` [B, S, H, D] of x's shape and dtype, a view such as one stream's rows of
// joint attention's q: in the kernel's own pass where each item's rows are contiguous, else copied in.
void qk_norm_rope_into(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps,
                       const at::Tensor& freqs);

// Weightless RMS norm over the last dim (statistics in fp32, the result rounded to x's dtype), followed
// where scale1 is given by the adaLN modulation shift + norm * scale1 (scale1 = 1 + scale; both
// [B, 1 or S, D]). One fused kernel for contiguous bf16 [B, S, D] on CUDA, the ATen composition elsewhere.
at::Tensor rms_modulate(const at::Tensor& x, double eps, const at::Tensor& scale1 = {}, const at::Tensor& shift = {});

// [a | silu(gate) * up] over the last dim, gate_up [..., 2F] holding the gate then the up half, `a` [..., Da]
// optional (undefined: none): the input of a SwiGLU MLP's output projection. One pass for bf16 on CUDA
// (strided rows allowed, e.g. a slice of a fused projection), the ATen ops (silu, mul, cat) elsewhere.
at::Tensor swiglu_concat(const at::Tensor& a, const at::Tensor& gate_up);

// The gated residual of a DiT block: x + gate * (y + bias). gate [B, 1 or S, D] (its last dim contiguous;
// undefined: 1), bias [D] (undefined: none; rounded into y first, as a separate add would). One vectorised
// pass for contiguous bf16 [B, S, D] on CUDA, the ATen composition (add, addcmul) elsewhere.
at::Tensor gated_residual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, const at::Tensor& bias);

// x + gate * (y + bias) as gated_residual computes it (y undefined: x itself; gate and bias then too), and
// the weightless RMS norm of that modulated by each (1 + scale, shift) pair in `mods` as rms_modulate does it
// (a pair of undefined tensors: the plain norm; 1 or 2 pairs, each [B, 1 or S, D]). One pass over the rows
// for contiguous bf16 [B, S, D] on CUDA with D a multiple of 8 up to 8192 and 16-byte aligned rows: x and y
// read once (LTX-2's blocks norm every updated x); those two ops one after the other elsewhere, the same
// values.
struct ResidualNorms {
  at::Tensor x;                   // [B, S, D]: the updated x (x itself when y is undefined)
  std::vector<at::Tensor> norms;  // [B, S, D] each, in the order of `mods`
};
ResidualNorms gated_residual_rms(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate,
                                 const at::Tensor& bias, double eps,
                                 const std::vector<std::pair<at::Tensor, at::Tensor>>& mods);

// RMSNorm with `weight` [D] over x [B, S, D] whose rows may be slices of wider rows held by other ranks
// (LTX-2's QK norm across all heads under TP): `reduce`, when set, sums the per-row sums of squares
// [B, S, 1] fp32 across those ranks and `width` is the full width. Then the rotary embedding in fp32:
// SplitHalf rotates element i of each head's first half with element i of its second half (cos/sin
// [S, heads, head_dim / 2]), Interleaved the pairs (2i, 2i + 1) (cos/sin [S, D], repeated per pair).
// Result in x's dtype; one fused kernel for bf16 on CUDA (plus a sum-of-squares pass when reduced).
enum class Rotary { None = 0, SplitHalf = 1, Interleaved = 2 };
at::Tensor rms_norm_rotary(const at::Tensor& x, const at::Tensor& weight, double eps, int64_t width,
                           const std::function<void(at::Tensor&)>& reduce, Rotary rotary, const at::Tensor& cos,
                           const at::Tensor& sin, int64_t head_dim);
// rms_norm_rotary of a self-attention's q and k (the same shape, the same tables), each with its weight: on
// CUDA one kernel that reads the tables once for both; elsewhere the two calls.
std::pair<at::Tensor, at::Tensor> rms_norm_rotary_pair(const at::Tensor& q, const at::Tensor& k,
                                                       const at::Tensor& q_weight, const at::Tensor& k_weight,
                                                       double eps, int64_t width,
                                                       const std::function<void(at::Tensor&)>& reduce,
                                                       Rotary rotary, const at::Tensor& cos, const at::Tensor& sin,
                                                       int64_t head_dim);

// The complex factors from cos/sin tables [S, D] whose entries repeat per pair.
at::Tensor rope_pair_factors(const at::Tensor& cos, const at::Tensor& sin);

// Half-split ("rotate_half") rotary embedding (Mistral / Qwen / Gemma): x [B, S, H, D], cos/sin
// [B or 1, S, D] in x's dtype.
at::Tensor rope_half(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace ditgen::nn
