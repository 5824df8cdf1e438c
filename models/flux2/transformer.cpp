#include "models/flux2/transformer.h"

#include <cmath>

#include "lib/io/json_fields.h"
#include "lib/nn/embeddings.h"
#include "lib/nn/joint_qkv.h"
#include "lib/nn/ops.h"
#include "lib/parallel/head_split.h"
#include "lib/runtime/error.h"
#include "lib/runtime/trace.h"

namespace ditgen::flux2 {

using nn::Init;
using nn::Shard;

TransformerConfig TransformerConfig::from_json(const nlohmann::json& j, const std::string& where) {
  TransformerConfig c;
  const io::JsonFields read(j, where);
  read("patch_size", c.patch_size);
  read("in_channels", c.in_channels);
  c.out_channels = io::json_get<int64_t>(j, "out_channels", c.in_channels, where);  // absent: in_channels
  read("num_layers", c.num_layers);
  read("num_single_layers", c.num_single_layers);
  read("attention_head_dim", c.attention_head_dim);
  read("num_attention_heads", c.num_attention_heads);
  read("joint_attention_dim", c.joint_attention_dim);
  read("timestep_guidance_channels", c.timestep_guidance_channels);
  read("mlp_ratio", c.mlp_ratio);
  read("axes_dims_rope", c.axes_dims_rope);
  read("rope_theta", c.rope_theta);
  read("eps", c.eps);
  read("guidance_embeds", c.guidance_embeds);

  nn::check_rope_axes(c.axes_dims_rope, c.attention_head_dim, where);
  DITGEN_CHECK(c.axes_dims_rope.size() == 4, "{}: axes_dims_rope must have 4 entries (t, h, w, l), has {}", where,
               c.axes_dims_rope.size());
  DITGEN_CHECK(c.timestep_guidance_channels % 2 == 0, "{}: timestep_guidance_channels must be even, got {}", where,
               c.timestep_guidance_channels);
  DITGEN_CHECK(c.num_attention_heads > 0 && c.attention_head_dim > 0 && c.num_layers >= 0 &&
                   c.num_single_layers >= 0 && c.patch_size >= 1 && c.in_channels > 0 && c.out_channels > 0 &&
                   c.joint_attention_dim > 0,
               "{}: head counts, dims, channels and layer counts must be positive", where);
  DITGEN_CHECK(c.rope_theta > 0, "{}: rope_theta must be positive, got {}", where, c.rope_theta);
  DITGEN_CHECK(c.eps > 0, "{}: eps must be positive, got {}", where, c.eps);
  DITGEN_CHECK(c.mlp_ratio > 0 && c.mlp_hidden() * 1.0 == c.inner_dim() * c.mlp_ratio,
               "{}: mlp_ratio {} must be positive and give a whole MLP width for inner dim {}", where, c.mlp_ratio,
               c.inner_dim());
  return c;
}

void TransformerConfig::check_mesh(const comm::Mesh& mesh) const {
  // The heads first, then the MLP width, then Ulysses, in the order the messages always came.
  const int tp = mesh.shape().tp;
  DITGEN_CHECK(num_attention_heads % tp == 0,
               "--tp {} does not divide the transformer's {} attention heads; choose a tp that divides {}", tp,
               num_attention_heads, num_attention_heads);
  DITGEN_CHECK(mlp_hidden() % tp == 0, "--tp {} does not divide the transformer's MLP width {}", tp, mlp_hidden());
  parallel::check_head_split(num_attention_heads, mesh);
}

// ---- embeddings ---------------------------------------------------------------------------------

std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& ids, const std::vector<int64_t>& axes, double theta) {
  // Angles in float64 (§2), on the ids' device (no host round trip), stored as float32 with each
  // frequency repeated for its pair.
  at::Tensor pos = ids.to(at::kDouble);  // [S, 4]
  std::vector<at::Tensor> cos, sin;
  for (size_t a = 0; a < axes.size(); ++a) {
    const int64_t d = axes[a];
    at::Tensor k = at::arange(0, d, 2, pos.options()).narrow(0, 0, d / 2);
    at::Tensor freqs = at::reciprocal(at::pow(theta, k / static_cast<double>(d)));  // [d/2]
    at::Tensor ang = at::outer(pos.select(1, static_cast<int64_t>(a)), freqs);     // [S, d/2]
    cos.push_back(at::cos(ang).repeat_interleave(2, 1));
    sin.push_back(at::sin(ang).repeat_interleave(2, 1));
  }
  return {at::cat(cos, 1).to(at::kFloat), at::cat(sin, 1).to(at::kFloat)};
}

// ---- construction -------------------------------------------------------------------------------

Transformer::Transformer(const TransformerConfig& config, const nn::Weights& wb_in,
                         std::shared_ptr<parallel::Context> ctx, bool fp8, std::shared_ptr<nn::BlockStreamer> offload)
    : cfg_(config), ctx_(std::move(ctx)) {
  cfg_.check_mesh(ctx_->mesh());
  const nn::Weights wb = wb_in.with_tp(ctx_->tp_group());
  const int64_t D = cfg_.inner_dim(), F = cfg_.mlp_hidden(), hd = cfg_.attention_head_dim;
  const int tp = ctx_->mesh().shape().tp;
  heads_local_ = cfg_.num_attention_heads / tp;
  mlp_local_ = F / tp;
  const int64_t in = cfg_.in_channels * cfg_.patch_size * cfg_.patch_size;

  x_embedder_ = wb.get("x_embedder.weight", {D, in});
  context_embedder_ = wb.get("context_embedder.weight", {D, cfg_.joint_attention_dim});
  const int64_t tc = cfg_.timestep_guidance_channels;
  t_lin1_ = wb.get("time_guidance_embed.timestep_embedder.linear_1.weight", {D, tc});
  t_lin2_ = wb.get("time_guidance_embed.timestep_embedder.linear_2.weight", {D, D});
  if (cfg_.guidance_embeds) {
    g_lin1_ = wb.get("time_guidance_embed.guidance_embedder.linear_1.weight", {D, tc});
    g_lin2_ = wb.get("time_guidance_embed.guidance_embedder.linear_2.weight", {D, D});
  }
  mod_img_ = wb.get("double_stream_modulation_img.linear.weight", {6 * D, D});
  mod_txt_ = wb.get("double_stream_modulation_txt.linear.weight", {6 * D, D});
  mod_single_ = wb.get("single_stream_modulation.linear.weight", {3 * D, D});
  norm_out_ = wb.get("norm_out.linear.weight", {2 * D, D});
  proj_out_ = wb.get("proj_out.weight", {cfg_.out_dim(), D});

  // Under --fp8 an FP8 checkpoint's e4m3 weights go to the FP8 linears as stored (lib/nn/linear.h).
  auto linear = [fp8](const nn::Weights& b, const std::string& name, const std::vector<int64_t>& shape,
                      const Shard& shard) { return nn::load_linear(b, name, shape, shard, fp8); };
  // Column-parallel projections are split by output rows, row-parallel ones by input columns;
  // fused layouts are permuted so each rank holds its heads' q, k, v and its MLP slice.
  double_blocks_ = nn::BlockList<DoubleBlock>(offload);
  double_blocks_.reserve(cfg_.num_layers);
  for (int64_t i = 0; i < cfg_.num_layers; ++i) {
    const nn::Weights b = wb.pp("transformer_blocks").pp(i);
    DoubleBlock d;
    d.to_q = linear(b, "attn.to_q.weight", {D, D}, Shard::rows());
    d.to_k = linear(b, "attn.to_k.weight", {D, D}, Shard::rows());
    d.to_v = linear(b, "attn.to_v.weight", {D, D}, Shard::rows());
    d.to_out = linear(b, "attn.to_out.0.weight", {D, D}, Shard::cols());
    d.add_q = linear(b, "attn.add_q_proj.weight", {D, D}, Shard::rows());
    d.add_k = linear(b, "attn.add_k_proj.weight", {D, D}, Shard::rows());
    d.add_v = linear(b, "attn.add_v_proj.weight", {D, D}, Shard::rows());
    d.to_add_out = linear(b, "attn.to_add_out.weight", {D, D}, Shard::cols());
    d.norm_q = b.get("attn.norm_q.weight", {hd}, Shard::replicated(), Init::Norm);
    d.norm_k = b.get("attn.norm_k.weight", {hd}, Shard::replicated(), Init::Norm);
    d.norm_added_q = b.get("attn.norm_added_q.weight", {hd}, Shard::replicated(), Init::Norm);
    d.norm_added_k = b.get("attn.norm_added_k.weight", {hd}, Shard::replicated(), Init::Norm);
    d.ff_in = linear(b, "ff.linear_in.weight", {2 * F, D}, Shard::rows({F, F}));
    d.ff_out = linear(b, "ff.linear_out.weight", {D, F}, Shard::cols());
    d.ff_ctx_in = linear(b, "ff_context.linear_in.weight", {2 * F, D}, Shard::rows({F, F}));
    d.ff_ctx_out = linear(b, "ff_context.linear_out.weight", {D, F}, Shard::cols());
    double_blocks_.push_back(std::move(d));
  }
  single_blocks_ = nn::BlockList<SingleBlock>(offload);  // streamed after the double blocks
  single_blocks_.reserve(cfg_.num_single_layers);
  for (int64_t i = 0; i < cfg_.num_single_layers; ++i) {
    const nn::Weights b = wb.pp("single_transformer_blocks").pp(i);
    SingleBlock s;
    s.qkv_mlp = linear(b, "attn.to_qkv_mlp_proj.weight", {3 * D + 2 * F, D}, Shard::rows({D, D, D, F, F}));
    s.to_out = linear(b, "attn.to_out.weight", {D, D + F}, Shard::cols({D, F}));
    s.norm_q = b.get("attn.norm_q.weight", {hd}, Shard::replicated(), Init::Norm);
    s.norm_k = b.get("attn.norm_k.weight", {hd}, Shard::replicated(), Init::Norm);
    single_blocks_.push_back(std::move(s));
  }
}

// ---- forward ------------------------------------------------------------------------------------

at::Tensor Transformer::embed_time(const at::Tensor& v, const at::Tensor& w1, const at::Tensor& w2,
                                   at::ScalarType dt) const {
  at::Tensor f = nn::timestep_features(v, cfg_.timestep_guidance_channels).to(dt);  // [B, 256]
  return nn::linear(at::silu(nn::linear(f, w1)), w2);                           // [B, D]
}

at::Tensor Transformer::rope(const at::Tensor& img_ids, const at::Tensor& txt_ids) const {
  // Each rank's chunks keep their global positions through the ids (split before the tables).
  const at::Device dev = x_embedder_.device();
  auto local = [&](const at::Tensor& ids) {
    return parallel::split_sequence((ids.dim() == 3 ? ids[0] : ids).to(dev), 0, *ctx_);  // [S_loc, 4]
  };
  auto [cos, sin] = rope_tables(at::cat({local(txt_ids), local(img_ids)}, 0), cfg_.axes_dims_rope, cfg_.rope_theta);
  return nn::rope_pair_factors(cos, sin);
}

Transformer::State Transformer::prepare(const TransformerInput& in) const {
  const at::ScalarType dt = x_embedder_.scalar_type();
  const at::Device dev = x_embedder_.device();
  const auto& ctx = *ctx_;
  State s;
  const int64_t n_img = in.hidden_states.size(1), n_txt = in.encoder_hidden_states.size(1);
  DITGEN_CHECK(in.hidden_states.dim() == 3 && in.hidden_states.size(2) == x_embedder_.size(1),
               "transformer: hidden_states must be [B, N, {}], got {}", x_embedder_.size(1),
               io::shape_str(in.hidden_states.sizes()));
  DITGEN_CHECK(in.encoder_hidden_states.dim() == 3 && in.encoder_hidden_states.size(2) == cfg_.joint_attention_dim,
               "transformer: encoder_hidden_states must be [B, L, {}], got {}", cfg_.joint_attention_dim,
               io::shape_str(in.encoder_hidden_states.sizes()));
  s.img_full = n_img;

  // Time and guidance embedding (model dtype, as the reference).
  at::Tensor t = in.timestep.to(dev, dt) * 1000;
  s.temb = embed_time(t, t_lin1_, t_lin2_, dt);
  if (cfg_.guidance_embeds) {
    DITGEN_CHECK(in.guidance.defined(), "transformer: this model embeds guidance; pass --guidance");
    at::Tensor g = in.guidance.to(dev, dt) * 1000;
    s.temb = s.temb + embed_time(g, g_lin1_, g_lin2_, dt);
  }
  at::Tensor st = at::silu(s.temb);
  auto chunks = [](const at::Tensor& m, int64_t k) {
    auto parts = m.unsqueeze(1).chunk(k, -1);  // k x [B, 1, D]
    std::vector<at::Tensor> out;
    for (auto& p : parts) out.push_back(p.contiguous());
    return out;
  };
  s.mod_img = chunks(nn::linear(st, mod_img_), 6);
  s.mod_txt = chunks(nn::linear(st, mod_txt_), 6);
  s.mod_single = chunks(nn::linear(st, mod_single_), 3);
  for (auto* m : {&s.mod_img, &s.mod_txt})
    for (int i : {1, 4}) (*m)[i] = (*m)[i] + 1;
  s.mod_single[1] = s.mod_single[1] + 1;

  // Split text and image tokens over the CP group once; positions stay global through the ids.
  s.x = nn::linear(parallel::split_sequence(in.hidden_states, 1, ctx).to(dev, dt), x_embedder_);
  s.c = nn::linear(parallel::split_sequence(in.encoder_hidden_states, 1, ctx).to(dev, dt), context_embedder_);
  s.txt_local = s.c.size(1);
  runtime::trace("transformer.temb", s.temb);              // [B, D], replicated
  runtime::trace("transformer.x_embedded", s.x);           // [B, N_loc, D]
  runtime::trace("transformer.c_embedded", s.c);           // [B, L_loc, D]

  const auto txt_sizes = parallel::chunk_sizes(n_txt, ctx), img_sizes = parallel::chunk_sizes(n_img, ctx);
  for (size_t i = 0; i < txt_sizes.size(); ++i) s.local_lens.push_back(txt_sizes[i] + img_sizes[i]);

  s.rope = in.rope.defined() ? in.rope : rope(in.img_ids, in.txt_ids);
  return s;
}

void Transformer::double_block(const DoubleBlock& b, State& s) const {
  const auto& m = s.mod_img;  // shift, scale, gate (attn) then shift, scale, gate (mlp)
  const auto& mc = s.mod_txt;
  const int64_t B = s.x.size(0), N = s.x.size(1), L = s.c.size(1), hd = cfg_.attention_head_dim;
  const double eps = cfg_.eps;

  // Modulated norms (1 + scale) * LN(x) + shift and gated residuals x + gate * f are single kernels.
  at::Tensor nx = nn::layer_norm_modulate(s.x, m[1], m[0], eps);
  at::Tensor nc = nn::layer_norm_modulate(s.c, mc[1], mc[0], eps);
  // QK norm then RoPE (text rows first in the table), V plain; joint attention over [text, image].
  const at::Tensor rope_txt = s.rope.narrow(0, 0, L), rope_img = s.rope.narrow(0, L, N);
  const auto [Q, K, V] = nn::joint_qkv(
      {nc, &b.add_q, &b.add_k, &b.add_v, {}, {}, {}, b.norm_added_q, b.norm_added_k, rope_txt},
      {nx, &b.to_q, &b.to_k, &b.to_v, {}, {}, {}, b.norm_q, b.norm_k, rope_img}, heads_local_, hd, eps);
  at::Tensor O = parallel::attention(Q, K, V, s.local_lens, *ctx_).reshape({B, L + N, heads_local_ * hd});

  const auto tp = parallel::tp_sum_of(*ctx_);
  s.x = nn::linear_residual(s.x, O.narrow(1, L, N), b.to_out, {}, m[2], tp);
  at::Tensor ff = nn::linear(nn::layer_norm_modulate(s.x, m[4], m[3], eps), b.ff_in);  // [B, N, 2F/tp]
  s.x = nn::swiglu_concat_residual(s.x, at::Tensor(), ff, b.ff_out, m[5], tp);

  s.c = nn::linear_residual(s.c, O.narrow(1, 0, L), b.to_add_out, {}, mc[2], tp);
  at::Tensor fc = nn::linear(nn::layer_norm_modulate(s.c, mc[4], mc[3], eps), b.ff_ctx_in);
  s.c = nn::swiglu_concat_residual(s.c, at::Tensor(), fc, b.ff_ctx_out, mc[5], tp);
}

void Transformer::single_block(const SingleBlock& b, State& s) const {
  const auto& m = s.mod_single;  // shift, scale, gate
  const int64_t B = s.h.size(0), S = s.h.size(1), hd = cfg_.attention_head_dim;
  const int64_t dl = heads_local_ * hd;
  at::Tensor n = nn::layer_norm_modulate(s.h, m[1], m[0], cfg_.eps);
  at::Tensor P = nn::linear(n, b.qkv_mlp);  // [B, S, 3 D/tp + 2 F/tp]: [q | k | v | gate | up]
  auto heads = [&](int64_t off) { return P.narrow(-1, off, dl).reshape({B, S, heads_local_, hd}); };
  at::Tensor q = nn::qk_norm_rope(heads(0), b.norm_q, cfg_.eps, s.rope);
  at::Tensor k = nn::qk_norm_rope(heads(dl), b.norm_k, cfg_.eps, s.rope);
  at::Tensor v = heads(2 * dl);
  at::Tensor a = parallel::attention(q, k, v, s.local_lens, *ctx_).reshape({B, S, dl});
  // [attention | SwiGLU(gate, up)] through the output projection (one fused pass under --fp8).
  s.h = nn::swiglu_concat_residual(s.h, a, P.narrow(-1, 3 * dl, 2 * mlp_local_), b.to_out, m[2],
                                   parallel::tp_sum_of(*ctx_));
}

void Transformer::run_double_blocks(State& s, int64_t begin, int64_t end) const {
  for (int64_t i = begin; i < end; ++i) {
    double_block(double_blocks_[i], s);
    runtime::trace(fmt::format("transformer_blocks.{}.x", i), s.x);  // [B, N_loc, D]
    runtime::trace(fmt::format("transformer_blocks.{}.c", i), s.c);  // [B, L_loc, D]
  }
}

void Transformer::join_streams(State& s) const {
  s.h = at::cat({s.c, s.x}, 1);
  s.x = at::Tensor();
  s.c = at::Tensor();
}

void Transformer::run_single_blocks(State& s, int64_t begin, int64_t end) const {
  for (int64_t i = begin; i < end; ++i) {
    single_block(single_blocks_[i], s);
    runtime::trace(fmt::format("single_transformer_blocks.{}.h", i), s.h);  // [B, L_loc + N_loc, D]
  }
}

at::Tensor Transformer::finish(const State& s) const {
  at::Tensor h = s.h.narrow(1, s.txt_local, s.h.size(1) - s.txt_local);
  auto e = nn::linear(at::silu(s.temb), norm_out_).chunk(2, -1);  // (scale, shift): scale first
  h = nn::layer_norm(h, cfg_.eps) * (1 + e[0].unsqueeze(1)) + e[1].unsqueeze(1);
  at::Tensor out = nn::linear(h, proj_out_);  // [B, N_loc, out_dim]
  runtime::trace("transformer.out_local", out);
  return parallel::gather_sequence(out, 1, s.img_full, *ctx_);
}

at::Tensor Transformer::forward(const TransformerInput& in, cache::Cache* cache, int branch) const {
  State s = prepare(in);
  const int64_t decided_from = cache::decision_block(cache);  // --offload: no copy runs past DBCache's decision
  double_blocks_.may_skip_from(decided_from);
  single_blocks_.may_skip_from(decided_from);
  if (cache == nullptr || !cache->options().enabled) {
    // One graph for both lists where no collective or copy runs inside (one rank per replica, resident blocks).
    std::vector<at::Tensor*> state{&s.x, &s.c, &s.h, &s.rope};
    for (auto* m : {&s.mod_img, &s.mod_txt, &s.mod_single})
      for (at::Tensor& t : *m) state.push_back(&t);
    const bool eligible = ctx_->mesh().model_size() == 1 && !double_blocks_.offloaded();
    graphs_.run(eligible, state, {}, [&] {
      run_double_blocks(s, 0, cfg_.num_layers);
      join_streams(s);
      run_single_blocks(s, 0, cfg_.num_single_layers);
    });
    return finish(s);
  }
  // DBCache (cache-dit-semantics §5.1): transformer_blocks is Pattern_1 (the image stream x decides;
  // x and the text stream c get their middle residuals), single_transformer_blocks Pattern_3 on the
  // joint [text, image] stream. The reference CLI gives the single-stream list 3 x rdt (§5.8).
  const double single_factor = cache->options().list_threshold_rules ? 3.0 : 1.0;
  cache->run("transformer_blocks", cfg_.num_layers, 1.0, branch, s.x, &s.c,
             [&](int64_t b, int64_t e) { run_double_blocks(s, b, e); });
  join_streams(s);
  cache->run("single_transformer_blocks", cfg_.num_single_layers, single_factor, branch, s.h, nullptr,
             [&](int64_t b, int64_t e) { run_single_blocks(s, b, e); });
  return finish(s);
}

}  // namespace ditgen::flux2
