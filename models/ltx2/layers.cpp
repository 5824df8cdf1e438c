#include "models/ltx2/layers.h"

#include <cmath>
#include <tuple>
#include <vector>

#include "lib/io/json.h"
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

namespace {

// QK RMSNorm across all heads (torch.nn.RMSNorm): the mean square spans every TP rank's heads; then RoPE in
// fp32, cast back (§1.6).
std::function<void(at::Tensor&)> across_tp(const parallel::Context& ctx) {
  if (ctx.mesh().shape().tp == 1) return {};
  return [&ctx](at::Tensor& sums) { parallel::tp_all_reduce(sums, ctx); };
}
nn::Rotary rotary(const Rope* r, bool split_rope) {
  return r == nullptr ? nn::Rotary::None : split_rope ? nn::Rotary::SplitHalf : nn::Rotary::Interleaved;
}

at::Tensor norm_rope(const at::Tensor& t, const at::Tensor& weight, const Rope* r, bool split_rope, double eps,
                     int64_t head_dim, const parallel::Context& ctx) {
  return nn::rms_norm_rotary(t, weight, eps, t.size(-1) * ctx.mesh().shape().tp, across_tp(ctx),
                             rotary(r, split_rope), r ? r->cos : at::Tensor(), r ? r->sin : at::Tensor(), head_dim);
}

// o [B, N, heads, head_dim] -> [B, N, heads * head_dim], the output projection's input.
at::Tensor merge_heads(const Attention& a, const at::Tensor& o) {
  return o.reshape({o.size(0), o.size(1), a.heads * a.head_dim});
}

}  // namespace

at::Tensor out_residual(const Attention& a, const at::Tensor& x, const at::Tensor& o, const at::Tensor& gate,
                        const parallel::Context& ctx) {
  return nn::linear_residual(x, o, a.out.w, a.out.b, gate, parallel::tp_sum_of(ctx));
}

nn::ResidualNorms out_residual_norms(const Attention& a, const at::Tensor& x, const at::Tensor& o,
                                     const at::Tensor& gate, double eps, const NormMods& mods,
                                     const parallel::Context& ctx) {
  return nn::linear_residual_norms(x, o, a.out.w, a.out.b, gate, parallel::tp_sum_of(ctx), eps, mods);
}

at::Tensor attend(const Attention& a, const at::Tensor& x, const at::Tensor& kv, const Rope* q_rope,
                  const Rope* k_rope, Keys keys, int64_t kv_full, bool split_rope, double eps,
                  const parallel::Context& ctx) {
  if (keys == Keys::OtherStream)
    return attend_keys(a, x, q_rope, project_keys(a, kv, k_rope, split_rope, eps, ctx), kv_full, split_rope, eps, ctx);
  const int64_t B = x.size(0), Nq = x.size(1), Nk = kv.size(1), h = a.heads, hd = a.head_dim;
  const nn::ReuseQuantisedInput once;  // --fp8: x (and kv) quantised once for q, k and v
  at::Tensor q = nn::linear(x, a.q.w, a.q.b), k = nn::linear(kv, a.k.w, a.k.b);
  if (q_rope == k_rope && q.sizes() == k.sizes()) {  // self-attention: one pass over the shared tables
    std::tie(q, k) = nn::rms_norm_rotary_pair(q, k, a.norm_q, a.norm_k, eps, q.size(-1) * ctx.mesh().shape().tp,
                                              across_tp(ctx), rotary(q_rope, split_rope),
                                              q_rope ? q_rope->cos : at::Tensor(),
                                              q_rope ? q_rope->sin : at::Tensor(), hd);
  } else {
    q = norm_rope(q, a.norm_q, q_rope, split_rope, eps, hd, ctx);
    k = norm_rope(k, a.norm_k, k_rope, split_rope, eps, hd, ctx);
  }
  at::Tensor v = nn::linear(kv, a.v.w, a.v.b);
  auto heads = [&](const at::Tensor& t, int64_t n) { return t.view({B, n, h, hd}); };
  const at::Tensor o = keys == Keys::Self ? parallel::attention(heads(q, Nq), heads(k, Nk), heads(v, Nk),
                                                                parallel::chunk_sizes(kv_full, ctx), ctx)
                                          : nn::attention(heads(q, Nq), heads(k, Nk), heads(v, Nk));
  return merge_heads(a, o);
}

ProjectedKeys project_keys(const Attention& a, const at::Tensor& kv, const Rope* k_rope, bool split_rope, double eps,
                           const parallel::Context& ctx) {
  const int64_t B = kv.size(0), Nk = kv.size(1), h = a.heads, hd = a.head_dim;
  const nn::ReuseQuantisedInput once;  // --fp8: kv quantised once for k and v
  const at::Tensor k = norm_rope(nn::linear(kv, a.k.w, a.k.b), a.norm_k, k_rope, split_rope, eps, hd, ctx);
  return {k.view({B, Nk, h, hd}), nn::linear(kv, a.v.w, a.v.b).view({B, Nk, h, hd})};
}

at::Tensor attend_keys(const Attention& a, const at::Tensor& x, const Rope* q_rope, const ProjectedKeys& keys,
                       int64_t kv_full, bool split_rope, double eps, const parallel::Context& ctx) {
  const at::Tensor q = norm_rope(nn::linear(x, a.q.w, a.q.b), a.norm_q, q_rope, split_rope, eps, a.head_dim, ctx);
  return merge_heads(a, parallel::attention_gathered_kv(q.view({x.size(0), x.size(1), a.heads, a.head_dim}), keys.k,
                                                        keys.v, kv_full, ctx));
}

TextContext text_context(const at::Tensor& context, const at::Tensor& key_mask) {
  TextContext t;
  if (!key_mask.defined()) {
    t.all = context;
    return t;
  }
  const at::Tensor m = key_mask.to(at::kCPU, at::kBool);
  DITGEN_CHECK(m.dim() == 2 && m.size(0) == context.size(0) && m.size(1) == context.size(1),
               "text attention: key mask {} does not fit the text context {}", io::shape_str(m.sizes()),
               io::shape_str(context.sizes()));
  for (int64_t b = 0; b < context.size(0); ++b)
    t.items.push_back(context.narrow(0, b, 1).index_select(1, m[b].nonzero().squeeze(1).to(context.device())));
  return t;
}

TextKeys text_keys(const Attention& a, const TextContext& text, double eps, const parallel::Context& ctx) {
  const int64_t h = a.heads, hd = a.head_dim;
  auto project = [&](const at::Tensor& c, TextKeys& out) {
    const nn::ReuseQuantisedInput once;  // --fp8: c quantised once for k and v
    const at::Tensor k = norm_rope(nn::linear(c, a.k.w, a.k.b), a.norm_k, nullptr, false, eps, hd, ctx);
    out.k.push_back(k.view({c.size(0), c.size(1), h, hd}));
    out.v.push_back(nn::linear(c, a.v.w, a.v.b).view({c.size(0), c.size(1), h, hd}));
  };
  TextKeys t;
  if (text.items.empty()) {
    t.whole = true;
    project(text.all, t);
    return t;
  }
  for (const at::Tensor& c : text.items) {
    if (c.size(1) == 0) {  // no visible key
      t.k.emplace_back();
      t.v.emplace_back();
      continue;
    }
    project(c, t);
  }
  return t;
}

at::Tensor attend_text(const Attention& a, const at::Tensor& x, const TextKeys& keys, double eps,
                       const parallel::Context& ctx) {
  const int64_t B = x.size(0), Nq = x.size(1), h = a.heads, hd = a.head_dim;
  const at::Tensor q = norm_rope(nn::linear(x, a.q.w, a.q.b), a.norm_q, nullptr, false, eps, hd, ctx).view({B, Nq, h, hd});
  if (keys.whole) return merge_heads(a, nn::attention(q, keys.k[0], keys.v[0]));
  DITGEN_CHECK(static_cast<int64_t>(keys.k.size()) == B, "internal: text keys for {} items, queries for {}",
               keys.k.size(), B);
  std::vector<at::Tensor> outs;
  for (int64_t b = 0; b < B; ++b) {
    const at::Tensor qb = q.narrow(0, b, 1);
    const at::Tensor& k = keys.k[static_cast<size_t>(b)];
    outs.push_back(k.defined() ? nn::attention(qb, k, keys.v[static_cast<size_t>(b)]) : at::zeros_like(qb));
  }
  return merge_heads(a, B == 1 ? outs[0] : at::cat(outs, 0));
}

FeedForward load_feed_forward(const nn::Weights& wb, int64_t width, int64_t hidden, bool fp8) {
  return {{nn::load_linear(wb, "net.0.proj.weight", {hidden, width}, Shard::rows(), fp8),
           wb.get("net.0.proj.bias", {hidden}, Shard::rows(), Init::Bias)},
          {nn::load_linear(wb, "net.2.weight", {width, hidden}, Shard::cols(), fp8),
           wb.get("net.2.bias", {width}, Shard::replicated(), Init::Bias)}};
}

at::Tensor ff_residual(const FeedForward& f, const at::Tensor& x, const at::Tensor& in, const at::Tensor& gate,
                       const parallel::Context& ctx) {
  return nn::gelu_tanh_mlp_residual(x, in, f.in.w, f.in.b, f.out.w, f.out.b, gate, parallel::tp_sum_of(ctx));
}

nn::ResidualNorms ff_residual_norms(const FeedForward& f, const at::Tensor& x, const at::Tensor& in,
                                    const at::Tensor& gate, double eps, const NormMods& mods,
                                    const parallel::Context& ctx) {
  return nn::gelu_tanh_mlp_residual_norms(x, in, f.in.w, f.in.b, f.out.w, f.out.b, gate, parallel::tp_sum_of(ctx),
                                          eps, mods);
}

}  // namespace ditgen::ltx2
