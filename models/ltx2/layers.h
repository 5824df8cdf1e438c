#pragma once
// The layers LTX-2's transformer and its text connectors share (docs/reference/ltx2.md §1.6, §1.9, §3):
// attention with a query/key RMSNorm across all heads, rotary embeddings in the "split" (per-head
// frequency slices, pairs (i, i + r)) or "interleaved" (pairs (2i, 2i+1) over the flat width) layout,
// the weightless RMSNorm and the GELU-tanh feed-forward. Tensor-parallel aware: under --tp each rank
// holds heads / tp and its slice of every MLP.
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "lib/nn/linear.h"
#include "lib/nn/offload.h"
#include "lib/nn/weights.h"
#include "lib/parallel/context.h"

namespace ditgen::ltx2 {

struct Linear {
  nn::Linear w;  // e4m3 under --fp8 (the transformer blocks' linears)
  at::Tensor b;
  template <class F>
  void tensors(F&& f) {  // for --offload (lib/nn/offload.h), as every struct of a block
    nn::each_tensor(f, w, b);
  }
};
// A replicated linear layer with bias.
Linear load_linear(const nn::Weights& wb, const std::string& name, int64_t out, int64_t in);

// Rotary tables of one attention for this rank's tokens (context parallel) and heads (tensor parallel).
struct Rope {
  at::Tensor cos, sin;  // split: [N, heads_local, head_dim/2] fp32; interleaved: [N, inner_local] fp32
};
struct RopeSettings {
  double theta = 10000;
  bool double_precision = true;
  bool split = true;
};
// omega_k = (pi/2) theta^(k/(n-1)) rounded to fp32, angle = f32(f32(2g - 1) * omega_k), frequency-major and
// axis-minor over the P axes of `grid` [N, P] (float64), missing entries prepended as identity (§1.9, §10.1).
Rope rope_table(const at::Tensor& grid, int64_t dim, int64_t heads, const RopeSettings& s,
                const parallel::Context& ctx, const at::Device& device);

struct Attention {
  Linear q, k, v, out;        // q/k/v column-parallel, out row-parallel
  at::Tensor norm_q, norm_k;  // [inner / tp] RMSNorm weights across heads
  int64_t heads = 0, head_dim = 0;  // heads on this rank
  template <class F>
  void tensors(F&& f) {
    nn::each_tensor(f, q, k, v, out, norm_q, norm_k);
  }
};
// `fp8` (--fp8): the four linears as FP8 linears (nn::load_linear: an FP8 checkpoint's e4m3 as stored,
// else quantised as they load).
Attention load_attention(const nn::Weights& wb, int64_t q_in, int64_t kv_in, int64_t heads, int64_t head_dim,
                         int64_t out_dim, int tp, bool fp8 = false);

// Where the keys live under context parallelism: the same split stream (self-attention), whole on every
// rank (text), or the other split stream (LTX-2's audio <-> video attention).
enum class Keys { Self, Whole, OtherStream };

// x [B, Nq_loc, q_in], kv [B, Nk_loc, kv_in] -> the attention's output [B, Nq_loc, heads * head_dim] before the
// output projection (out_residual). `kv_full` = the key stream's global length (Self, OtherStream).
at::Tensor attend(const Attention& a, const at::Tensor& x, const at::Tensor& kv, const Rope* q_rope,
                  const Rope* k_rope, Keys keys, int64_t kv_full, bool split_rope, double eps,
                  const parallel::Context& ctx);

// attend() with Keys::OtherStream in two parts, so that another stream can make the keys: the keys (normalised,
// rotated by `k_rope`) and values of `a` from kv [B, Nk_loc, kv_in], [B, Nk_loc, heads, head_dim] each; then x's
// queries over them (`kv_full`: the key stream's global length).
struct ProjectedKeys {
  at::Tensor k, v;
};
ProjectedKeys project_keys(const Attention& a, const at::Tensor& kv, const Rope* k_rope, bool split_rope, double eps,
                           const parallel::Context& ctx);
at::Tensor attend_keys(const Attention& a, const at::Tensor& x, const Rope* q_rope, const ProjectedKeys& keys,
                       int64_t kv_full, bool split_rope, double eps, const parallel::Context& ctx);

// x + gate * (o @ out^T + out bias): the output projection (summed over the TP group) into the residual stream,
// in the GEMM's epilogue where it can (nn::linear_residual). gate [B, 1, out] or undefined (1).
at::Tensor out_residual(const Attention& a, const at::Tensor& x, const at::Tensor& o, const at::Tensor& gate,
                        const parallel::Context& ctx);

// A text context whole on every rank: `all` when every key is visible, else each item's visible rows (padded
// text tokens dropped once per forward, so no layer copies a mask to the device or projects hidden keys).
struct TextContext {
  at::Tensor all;                 // [B, L, C]
  std::vector<at::Tensor> items;  // [1, L_b, C] each
};
// key_mask [B, L] bool (undefined: all visible).
TextContext text_context(const at::Tensor& context, const at::Tensor& key_mask);
// A text context's keys (normalised) and values for one attention, [B, L, heads, head_dim] each when every key is
// visible, else one pair [1, L_b, heads, head_dim] per item (undefined for an item with no visible key). The
// text does not change over the denoising steps: the transformer computes them once per prompt.
struct TextKeys {
  std::vector<at::Tensor> k, v;
  bool whole = false;  // one pair for the whole batch
};
TextKeys text_keys(const Attention& a, const TextContext& text, double eps, const parallel::Context& ctx);
// attend() with Keys::Whole over a text context's keys; an item with no visible key gets 0.
at::Tensor attend_text(const Attention& a, const at::Tensor& x, const TextKeys& keys, double eps,
                       const parallel::Context& ctx);

// (1 + scale, shift) pairs of the modulated RMS norms the next layers take of a residual's result (an undefined
// pair: the plain norm).
using NormMods = std::vector<std::pair<at::Tensor, at::Tensor>>;
// out_residual, and the RMS norms of its result by `mods`, made in the residual's pass (nn::linear_residual_norms).
nn::ResidualNorms out_residual_norms(const Attention& a, const at::Tensor& x, const at::Tensor& o,
                                     const at::Tensor& gate, double eps, const NormMods& mods,
                                     const parallel::Context& ctx);

// x * rsqrt(mean(x^2) + eps), no weight, statistics in fp32, in x's dtype.
at::Tensor rms(const at::Tensor& x, double eps);

struct FeedForward {
  Linear in, out;  // in column-parallel, out row-parallel
  template <class F>
  void tensors(F&& f) {
    nn::each_tensor(f, in, out);
  }
};
FeedForward load_feed_forward(const nn::Weights& wb, int64_t width, int64_t hidden, bool fp8 = false);
// x + gate * ff(in): the GELU MLP of `in` into the residual stream, as out_residual.
at::Tensor ff_residual(const FeedForward& f, const at::Tensor& x, const at::Tensor& in, const at::Tensor& gate,
                       const parallel::Context& ctx);
// ff_residual and the RMS norms of its result, as out_residual_norms.
nn::ResidualNorms ff_residual_norms(const FeedForward& f, const at::Tensor& x, const at::Tensor& in,
                                    const at::Tensor& gate, double eps, const NormMods& mods,
                                    const parallel::Context& ctx);

}  // namespace ditgen::ltx2
