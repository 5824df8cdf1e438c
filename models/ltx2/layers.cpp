#include "models/ltx2/layers.h"

#include <cmath>
#include <vector>

#include "lib/nn/ops.h"
#include "lib/runtime/error.h"

namespace ditgen::ltx2 {

using nn::Init;
using nn::Shard;

Linear load_linear(const nn::Weights& wb, const std::string& name, int64_t out, int64_t in) {
  return {nn::Linear(wb.get(name + ".weight", {out, in})), wb.get(name + ".bias", {out}, Shard::replicated(), Init::Bias)};
}

Rope rope_table(const at::Tensor& grid, int64_t dim, int64_t heads, const RopeSettings& rs,
                const parallel::Context& ctx, const at::Device& device) {
  const int64_t N = grid.size(0), P = grid.size(1), n = dim / (2 * P);
  DITGEN_CHECK(n >= 1, "RoPE width {} is too small for {} position axes", dim, P);
  std::vector<float> omega(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    const double e = n > 1 ? static_cast<double>(k) / static_cast<double>(n - 1) : 0.0;
    omega[static_cast<size_t>(k)] =
        rs.double_precision
            ? static_cast<float>(M_PI / 2 * std::pow(rs.theta, e))
            : static_cast<float>(M_PI / 2) * std::pow(static_cast<float>(rs.theta), static_cast<float>(e));
  }
  at::Tensor s = (grid * 2 - 1).to(at::kFloat);                          // [N, P]
  at::Tensor ang = s.unsqueeze(1) * at::tensor(omega).view({1, n, 1});  // [N, n, P] fp32
  ang = ang.reshape({N, n * P});                                        // frequency-major, axis-minor
  at::Tensor cos = at::cos(ang), sin = at::sin(ang);
  const int64_t tp = ctx.mesh().shape().tp, rank = ctx.mesh().tp_index();
  auto identity_first = [&](int64_t pad) {
    if (pad <= 0) return;
    cos = at::cat({at::ones({N, pad}, at::kFloat), cos}, 1);
    sin = at::cat({at::zeros({N, pad}, at::kFloat), sin}, 1);
  };
  if (rs.split) {
    // Head h uses entries h*r .. h*r + r - 1 (each head its own slice); this rank holds heads/tp of them.
    identity_first(dim / 2 - n * P);
    const int64_t r = dim / (2 * heads), hl = heads / tp;
    cos = cos.view({N, heads, r}).narrow(1, rank * hl, hl);
    sin = sin.view({N, heads, r}).narrow(1, rank * hl, hl);
  } else {
    // Interleaved: every entry for a pair (2i, 2i+1) over the full inner width.
    cos = cos.repeat_interleave(2, 1);
    sin = sin.repeat_interleave(2, 1);
    identity_first(dim - 2 * n * P);
    const int64_t local = dim / tp;
    cos = cos.narrow(1, rank * local, local);
    sin = sin.narrow(1, rank * local, local);
  }
  return {parallel::split_sequence(cos, 0, ctx).contiguous().to(device),
          parallel::split_sequence(sin, 0, ctx).contiguous().to(device)};
}

Attention load_attention(const nn::Weights& wb, int64_t q_in, int64_t kv_in, int64_t heads, int64_t head_dim,
                         int64_t out_dim, int tp, bool fp8) {
  // q/k/v column-parallel (heads / tp each), the output row-parallel; the across-heads QK norm weight is
  // split with the heads (its statistics are summed over the TP group in `attend`).
  const int64_t inner = heads * head_dim;
  auto column = [&](const std::string& n, int64_t in) {
    return Linear{nn::load_linear(wb, n + ".weight", {inner, in}, Shard::rows(), fp8),
                  wb.get(n + ".bias", {inner}, Shard::rows(), Init::Bias)};
  };
  Attention a;
  a.q = column("to_q", q_in);
  a.k = column("to_k", kv_in);
  a.v = column("to_v", kv_in);
  a.out = {nn::load_linear(wb, "to_out.0.weight", {out_dim, inner}, Shard::cols(), fp8),
           wb.get("to_out.0.bias", {out_dim}, Shard::replicated(), Init::Bias)};
  a.norm_q = wb.get("norm_q.weight", {inner}, Shard::rows(), Init::Norm);
  a.norm_k = wb.get("norm_k.weight", {inner}, Shard::rows(), Init::Norm);
  a.heads = heads / tp;
  a.head_dim = head_dim;
  return a;
}

at::Tensor rms(const at::Tensor& x, double eps) { return nn::rms_modulate(x, eps); }

at::Tensor attend(const Attention& a, const at::Tensor& x, const at::Tensor& kv, const Rope* q_rope,
                  const Rope* k_rope, Keys keys, int64_t kv_full, const at::Tensor& key_mask, bool split_rope,
                  double eps, const parallel::Context& ctx) {
  const int64_t B = x.size(0), Nq = x.size(1), Nk = kv.size(1), h = a.heads, hd = a.head_dim;
  const int tp = ctx.mesh().shape().tp;
  // QK RMSNorm across all heads (torch.nn.RMSNorm): the mean square spans every TP rank's heads; then
  // RoPE in fp32, cast back (§1.6).
  std::function<void(at::Tensor&)> across_tp;
  if (tp > 1) across_tp = [&](at::Tensor& sums) { parallel::tp_all_reduce(sums, ctx); };
  auto norm_rope = [&](const at::Tensor& t, const at::Tensor& w, const Rope* r) {
    const nn::Rotary kind = r == nullptr ? nn::Rotary::None : split_rope ? nn::Rotary::SplitHalf : nn::Rotary::Interleaved;
    return nn::rms_norm_rotary(t, w, eps, t.size(-1) * tp, across_tp, kind, r ? r->cos : at::Tensor(),
                               r ? r->sin : at::Tensor(), hd);
  };
  at::Tensor q = norm_rope(nn::linear(x, a.q.w, a.q.b), a.norm_q, q_rope);
  at::Tensor k = norm_rope(nn::linear(kv, a.k.w, a.k.b), a.norm_k, k_rope);
  at::Tensor v = nn::linear(kv, a.v.w, a.v.b);
  auto heads = [&](const at::Tensor& t, int64_t n) { return t.view({B, n, h, hd}); };
  at::Tensor o;
  if (keys == Keys::Self) {
    o = parallel::attention(heads(q, Nq), heads(k, Nk), heads(v, Nk), parallel::chunk_sizes(kv_full, ctx), ctx);
  } else if (keys == Keys::OtherStream) {
    o = parallel::attention_gathered_kv(heads(q, Nq), heads(k, Nk), heads(v, Nk), kv_full, ctx);
  } else if (key_mask.defined()) {
    o = nn::attention_visible_keys(heads(q, Nq), heads(k, Nk), heads(v, Nk), key_mask, false).out;
  } else {
    o = nn::attention(heads(q, Nq), heads(k, Nk), heads(v, Nk));
  }
  at::Tensor y = nn::linear(o.reshape({B, Nq, h * hd}), a.out.w);
  parallel::tp_all_reduce(y, ctx);
  return y.add_(a.out.b);  // once, after the sum of the partial products
}

FeedForward load_feed_forward(const nn::Weights& wb, int64_t width, int64_t hidden, bool fp8) {
  return {{nn::load_linear(wb, "net.0.proj.weight", {hidden, width}, Shard::rows(), fp8),
           wb.get("net.0.proj.bias", {hidden}, Shard::rows(), Init::Bias)},
          {nn::load_linear(wb, "net.2.weight", {width, hidden}, Shard::cols(), fp8),
           wb.get("net.2.bias", {width}, Shard::replicated(), Init::Bias)}};
}

at::Tensor feed_forward(const FeedForward& f, const at::Tensor& x, const parallel::Context& ctx) {
  at::Tensor o = nn::linear(nn::linear_gelu_tanh(x, f.in.w, f.in.b), f.out.w);
  parallel::tp_all_reduce(o, ctx);
  return o.add_(f.out.b);
}

}  // namespace ditgen::ltx2
