#include "models/qwen_image/transformer.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "lib/io/json_fields.h"
#include "lib/nn/embeddings.h"
#include "lib/nn/joint_qkv.h"
#include "lib/nn/ops.h"
#include "lib/parallel/head_split.h"
#include "lib/pipeline/memory_limit.h"
#include "lib/pipeline/model.h"
#include "lib/runtime/error.h"
#include "lib/runtime/trace.h"

namespace ditgen::qwen_image {

using nn::Init;
using nn::Shard;

TransformerConfig TransformerConfig::from_json(const nlohmann::json& j, const std::string& where) {
  DITGEN_CHECK(j.is_object(), "{}: the transformer config must be a JSON object", where);
  TransformerConfig c;
  const io::JsonFields read(j, where);
  read("patch_size", c.patch_size);
  read("in_channels", c.in_channels);
  read("out_channels", c.out_channels);
  read("num_layers", c.num_layers);
  read("attention_head_dim", c.attention_head_dim);
  read("num_attention_heads", c.num_attention_heads);
  read("joint_attention_dim", c.joint_attention_dim);
  read("axes_dims_rope", c.axes_dims_rope);
  // Variants that share the class but not this forward (§1.1): refuse rather than run them wrongly.
  for (const char* flag : {"guidance_embeds", "zero_cond_t", "use_additional_t_cond", "use_layer3d_rope"})
    DITGEN_CHECK(!io::json_get<bool>(j, flag, false, where),
                 "{}: '{}' is true: that Qwen-Image variant (Edit / Layered / guidance-distilled) is not supported "
                 "by `ditgen qwen-image`",
                 where, flag);

  DITGEN_CHECK(c.patch_size >= 1 && c.in_channels >= 1 && c.out_channels >= 1 && c.num_layers >= 0 &&
                   c.attention_head_dim >= 2 && c.num_attention_heads >= 1 && c.joint_attention_dim >= 1,
               "{}: patch_size, channels, head counts and dims must be positive (num_layers >= 0)", where);
  DITGEN_CHECK(c.axes_dims_rope.size() == 3, "{}: axes_dims_rope must have 3 entries (frame, height, width), has {}",
               where, c.axes_dims_rope.size());
  nn::check_rope_axes(c.axes_dims_rope, c.attention_head_dim, where);
  return c;
}

void TransformerConfig::check_mesh(const comm::Mesh& mesh) const {
  parallel::check_head_split(num_attention_heads, mesh);
}

// ---- RoPE ---------------------------------------------------------------------------------------

at::Tensor image_positions(int64_t frames, int64_t height, int64_t width) {
  // Frames count from 0; rows and columns are centred: r - (h - h/2) (§2, scale_rope).
  at::Tensor f = at::arange(frames, at::kLong).repeat_interleave(height * width);
  at::Tensor r = (at::arange(height, at::kLong) - (height - height / 2)).repeat_interleave(width).repeat({frames});
  at::Tensor c = (at::arange(width, at::kLong) - (width - width / 2)).repeat({frames * height});
  return at::stack({f, r, c}, 1);
}

at::Tensor text_positions(int64_t text_len, int64_t height, int64_t width) {
  const int64_t m = std::max(height / 2, width / 2);  // past every image position on every axis
  return (at::arange(text_len, at::kLong) + m).unsqueeze(1).expand({text_len, 3}).contiguous();
}

at::Tensor rope_factors(const at::Tensor& positions, const std::vector<int64_t>& axes, double theta) {
  // Reference arithmetic in fp32: inv = 1 / theta^(arange(0, d, 2) / d), angle = pos * inv, then
  // polar(1, angle); each axis has its own table.
  at::Tensor pos = positions.to(at::kCPU, at::kFloat);  // [S, 3]
  std::vector<at::Tensor> parts;
  for (size_t a = 0; a < axes.size(); ++a) {
    const int64_t d = axes[a];
    at::Tensor inv = at::reciprocal(at::pow(theta, at::arange(0, d, 2, at::kFloat).div(static_cast<double>(d))));
    at::Tensor ang = at::outer(pos.select(1, static_cast<int64_t>(a)).contiguous(), inv);  // [S, d/2]
    parts.push_back(at::complex(at::cos(ang), at::sin(ang)));
  }
  return at::cat(parts, 1);  // [S, sum(axes)/2] complex64
}

at::Tensor Transformer::rope(int64_t frames, int64_t height, int64_t width, int64_t text_len) const {
  // Global tables, then this rank's chunks: positions stay global under context parallelism.
  const auto& ax = cfg_.axes_dims_rope;
  at::Tensor txt = rope_factors(text_positions(text_len, height, width), ax, TransformerConfig::kRopeTheta);
  at::Tensor img = rope_factors(image_positions(frames, height, width), ax, TransformerConfig::kRopeTheta);
  at::Tensor local = at::cat({parallel::split_sequence(txt, 0, *ctx_), parallel::split_sequence(img, 0, *ctx_)}, 0);
  return local.to(img_in_.w.weight.device());
}

// ---- construction -------------------------------------------------------------------------------

Transformer::Linear Transformer::column(const nn::Weights& wb, const std::string& name, int64_t out, int64_t in,
                                        bool fp8) const {
  return {nn::load_linear(wb, name + ".weight", {out, in}, Shard::rows(), fp8),
          wb.get(name + ".bias", {out}, Shard::rows(), Init::Bias)};
}

Transformer::Linear Transformer::row(const nn::Weights& wb, const std::string& name, int64_t out, int64_t in,
                                     bool fp8) const {
  return {nn::load_linear(wb, name + ".weight", {out, in}, Shard::cols(), fp8),
          wb.get(name + ".bias", {out}, Shard::replicated(), Init::Bias)};
}

Transformer::Transformer(const TransformerConfig& config, const nn::Weights& wb_in,
                         std::shared_ptr<parallel::Context> ctx, bool fp8, std::shared_ptr<nn::BlockStreamer> offload)
    : cfg_(config), ctx_(std::move(ctx)), blocks_(std::move(offload)) {
  cfg_.check_mesh(ctx_->mesh());
  const nn::Weights wb = wb_in.with_tp(ctx_->tp_group());
  const int64_t D = cfg_.inner_dim(), F = cfg_.mlp_hidden(), hd = cfg_.attention_head_dim;
  heads_local_ = cfg_.num_attention_heads / ctx_->mesh().shape().tp;
  auto replicated = [&](const std::string& name, int64_t out, int64_t in) {
    return Linear{nn::Linear(wb.get(name + ".weight", {out, in})),
                  wb.get(name + ".bias", {out}, Shard::replicated(), Init::Bias)};
  };
  img_in_ = replicated("img_in", D, cfg_.in_channels);
  txt_norm_ = wb.get("txt_norm.weight", {cfg_.joint_attention_dim}, Shard::replicated(), Init::Norm);
  txt_in_ = replicated("txt_in", D, cfg_.joint_attention_dim);
  t_lin1_ = replicated("time_text_embed.timestep_embedder.linear_1", D, 256);
  t_lin2_ = replicated("time_text_embed.timestep_embedder.linear_2", D, D);
  norm_out_ = replicated("norm_out.linear", 2 * D, D);
  proj_out_ = replicated("proj_out", cfg_.out_dim(), D);

  blocks_.reserve(cfg_.num_layers);
  for (int64_t i = 0; i < cfg_.num_layers; ++i) {
    const nn::Weights b = wb.pp("transformer_blocks").pp(i);
    Block k;
    k.img_mod = column(b, "img_mod.1", 6 * D, D, fp8);
    k.txt_mod = column(b, "txt_mod.1", 6 * D, D, fp8);
    k.to_q = column(b, "attn.to_q", D, D, fp8);
    k.to_k = column(b, "attn.to_k", D, D, fp8);
    k.to_v = column(b, "attn.to_v", D, D, fp8);
    k.add_q = column(b, "attn.add_q_proj", D, D, fp8);
    k.add_k = column(b, "attn.add_k_proj", D, D, fp8);
    k.add_v = column(b, "attn.add_v_proj", D, D, fp8);
    k.to_out = row(b, "attn.to_out.0", D, D, fp8);
    k.to_add_out = row(b, "attn.to_add_out", D, D, fp8);
    k.norm_q = b.get("attn.norm_q.weight", {hd}, Shard::replicated(), Init::Norm);
    k.norm_k = b.get("attn.norm_k.weight", {hd}, Shard::replicated(), Init::Norm);
    k.norm_added_q = b.get("attn.norm_added_q.weight", {hd}, Shard::replicated(), Init::Norm);
    k.norm_added_k = b.get("attn.norm_added_k.weight", {hd}, Shard::replicated(), Init::Norm);
    k.img_mlp_in = column(b, "img_mlp.net.0.proj", F, D, fp8);
    k.img_mlp_out = row(b, "img_mlp.net.2", D, F, fp8);
    k.txt_mlp_in = column(b, "txt_mlp.net.0.proj", F, D, fp8);
    k.txt_mlp_out = row(b, "txt_mlp.net.2", D, F, fp8);
    blocks_.push_back(std::move(k));
  }
}

// ---- forward ------------------------------------------------------------------------------------

at::Tensor Transformer::time_embedding(const at::Tensor& timestep) const {
  // Timestep: sigma in the model dtype, sinusoid of 1000 * sigma (the scale after the product).
  const at::ScalarType dt = img_in_.w.weight.scalar_type();
  at::Tensor f = nn::timestep_features(timestep.to(img_in_.w.weight.device(), dt), 256, 1000.0).to(dt);  // [M, 256]
  return nn::linear(at::silu(nn::linear(f, t_lin1_.w, t_lin1_.b)), t_lin2_.w, t_lin2_.b);                  // [M, D]
}

at::Tensor Transformer::modulation_rows(const Linear& l, const at::Tensor& silu_temb) const {
  // Column-parallel with a gathered output: every rank needs all six vectors (§2.3 of the cache-dit notes).
  at::Tensor m = nn::linear(silu_temb, l.w, l.b);  // [M, 6D/tp]
  if (ctx_->mesh().shape().tp > 1) {
    const int tp = ctx_->mesh().shape().tp;
    m = ctx_->tp().all_gather(m.contiguous(), 1, std::vector<int64_t>(tp, m.size(1)));
  }
  return m;
}

at::Tensor Transformer::modulation_table(const std::vector<float>& schedule, at::ScalarType timestep_dtype,
                                         const at::Device& dev) const {
  std::vector<at::Tensor> ts;  // as the pipeline makes each forward's timestep
  for (float t : schedule) ts.push_back(pipeline::model_timestep(t, 1, timestep_dtype, dev));
  const at::Tensor st = at::silu(time_embedding(at::cat(ts)));  // [S, D]
  const int64_t S = st.size(0), D = st.size(1);
  at::Tensor table = at::empty({S, cfg_.num_layers, 2, 6, D}, st.options());
  for (int64_t i = 0; i < cfg_.num_layers; ++i) {
    const Block& b = blocks_[i];
    table.select(1, i).select(1, 0).copy_(modulation_rows(b.img_mod, st).view({S, 6, D}));
    table.select(1, i).select(1, 1).copy_(modulation_rows(b.txt_mod, st).view({S, 6, D}));
  }
  table.select(3, 1).add_(1);
  table.select(3, 4).add_(1);
  return table;
}

std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> Transformer::block_modulation(const Block& b, int64_t i,
                                                                                           const State& s) const {
  const int64_t B = s.x.size(0);
  auto six = [&](const at::Tensor& rows) {  // [6, D] -> six [B, 1, D]
    std::vector<at::Tensor> out;
    for (int64_t k = 0; k < 6; ++k) {
      const at::Tensor v = rows[k].view({1, 1, -1});
      out.push_back(B == 1 ? v : v.expand({B, 1, v.size(2)}).contiguous());
    }
    return out;
  };
  if (s.mods.defined()) return {six(s.mods[i][0]), six(s.mods[i][1])};
  // Without a schedule (or with --offload, whose blocks are streamed in turn): this block's GEMVs, per item.
  const at::Tensor st = at::silu(s.temb);
  auto per_item = [&](const Linear& l) {
    std::vector<at::Tensor> out;
    for (auto& p : modulation_rows(l, st).unsqueeze(1).chunk(6, -1)) out.push_back(p.contiguous());
    out[1] = out[1] + 1;
    out[4] = out[4] + 1;
    return out;
  };
  return {per_item(b.img_mod), per_item(b.txt_mod)};
}

Transformer::State Transformer::prepare(const TransformerInput& in) const {
  const at::ScalarType dt = img_in_.w.weight.scalar_type();
  const at::Device dev = img_in_.w.weight.device();
  const auto& ctx = *ctx_;
  const int64_t B = in.hidden_states.size(0), n_img = in.hidden_states.size(1);
  const int64_t n_txt = in.encoder_hidden_states.size(1);
  DITGEN_CHECK(in.hidden_states.dim() == 3 && in.hidden_states.size(2) == cfg_.in_channels,
               "transformer: hidden_states must be [B, N, {}], got {}", cfg_.in_channels,
               io::shape_str(in.hidden_states.sizes()));
  DITGEN_CHECK(in.encoder_hidden_states.dim() == 3 && in.encoder_hidden_states.size(0) == B &&
                   in.encoder_hidden_states.size(2) == cfg_.joint_attention_dim,
               "transformer: encoder_hidden_states must be [{}, L, {}], got {}", B, cfg_.joint_attention_dim,
               io::shape_str(in.encoder_hidden_states.sizes()));
  DITGEN_CHECK(in.frames * in.height * in.width == n_img,
               "transformer: img_shapes ({}, {}, {}) hold {} tokens but hidden_states has {}", in.frames, in.height,
               in.width, in.frames * in.height * in.width, n_img);
  State s;
  s.img_full = n_img;

  s.temb = time_embedding(in.timestep);  // [B, D]
  if (in.schedule != nullptr && !blocks_.offloaded()) {
    const auto& sched = *in.schedule;
    const auto at_t = std::find(sched.begin(), sched.end(), in.t);
    if (at_t != sched.end()) {
      const at::ScalarType tdt = in.timestep.scalar_type();  // the dtype model_timestep made it in
      if (mods_.schedule != sched || mods_.dtype != tdt) {  // decided once per schedule, the same on every rank
        mods_ = {};
        const int64_t bytes = static_cast<int64_t>(sched.size()) * cfg_.num_layers * 12 * cfg_.inner_dim() *
                              static_cast<int64_t>(c10::elementSize(dt));
        const int64_t room = pipeline::allocatable_bytes(dev);
        // Agreed over the world: the table's GEMMs gather over TP, and its values may differ in the last bit
        // from the per-forward GEMVs, which every replica and CFG half must then run alike.
        const bool keep = parallel::on_every_rank(room < 0 || bytes <= room / 4, ctx_->world(), dev);
        spdlog::debug("Qwen-Image: the modulation vectors of {} steps ({:.2f} GiB) are {} ({:.2f} GiB room)",
                      sched.size(), bytes / 1073741824.0, keep ? "kept" : "computed in every forward",
                      room / 1073741824.0);
        mods_ = {sched, tdt, keep ? modulation_table(sched, tdt, dev) : at::Tensor()};
      }
      if (mods_.table.defined()) s.mods = mods_.table[at_t - sched.begin()];
    }
  }

  // Split text and image tokens over the CP group once; positions stay global through the tables.
  at::Tensor ctx_local = parallel::split_sequence(in.encoder_hidden_states, 1, ctx).to(dev, dt);
  s.c = nn::linear(nn::rms_norm_cast_first(ctx_local, txt_norm_, TransformerConfig::kEps), txt_in_.w, txt_in_.b);
  s.x = nn::linear(parallel::split_sequence(in.hidden_states, 1, ctx).to(dev, dt), img_in_.w, img_in_.b);
  runtime::trace("transformer.temb", s.temb);     // [B, D], replicated
  runtime::trace("transformer.x_embedded", s.x);  // [B, N_loc, D]
  runtime::trace("transformer.c_embedded", s.c);  // [B, L_loc, D]

  const auto txt_sizes = parallel::chunk_sizes(n_txt, ctx), img_sizes = parallel::chunk_sizes(n_img, ctx);
  for (size_t i = 0; i < txt_sizes.size(); ++i) s.local_lens.push_back(txt_sizes[i] + img_sizes[i]);

  // The mask hides padded text keys only (§1.6); an all-ones mask is no mask (§4.3 step 5).
  if (in.encoder_mask.defined()) {
    at::Tensor m = in.encoder_mask.to(at::kCPU).ne(0);
    DITGEN_CHECK(m.dim() == 2 && m.size(0) == B && m.size(1) == n_txt,
                 "transformer: encoder mask must be [{}, {}], got {}", B, n_txt, io::shape_str(m.sizes()));
    if (!m.all().item<bool>()) {
      int64_t t0 = 0;
      for (size_t i = 0; i < txt_sizes.size(); ++i) {
        s.key_masks.push_back(at::cat({m.narrow(1, t0, txt_sizes[i]), at::ones({B, img_sizes[i]}, at::kBool)}, 1));
        t0 += txt_sizes[i];
      }
    }
  }
  s.rope = in.rope.defined() ? in.rope : rope(in.frames, in.height, in.width, n_txt);
  return s;
}

void Transformer::block(const Block& b, int64_t i, State& s) const {
  const int64_t B = s.x.size(0), N = s.x.size(1), L = s.c.size(1), hd = cfg_.attention_head_dim;
  const double eps = TransformerConfig::kEps;
  const auto [m, mc] = block_modulation(b, i, s);  // shift, 1 + scale, gate (attention) then (MLP)

  at::Tensor nx = nn::layer_norm_modulate(s.x, m[1], m[0], eps);
  at::Tensor nc = nn::layer_norm_modulate(s.c, mc[1], mc[0], eps);
  // QK norm then RoPE (text rows first in the table), V plain; joint attention over [text, image].
  const at::Tensor rope_txt = s.rope.narrow(0, 0, L), rope_img = s.rope.narrow(0, L, N);
  const auto [Q, K, V] = nn::joint_qkv({nc, &b.add_q.w, &b.add_k.w, &b.add_v.w, b.add_q.b, b.add_k.b, b.add_v.b,
                                        b.norm_added_q, b.norm_added_k, rope_txt},
                                       {nx, &b.to_q.w, &b.to_k.w, &b.to_v.w, b.to_q.b, b.to_k.b, b.to_v.b, b.norm_q,
                                        b.norm_k, rope_img},
                                       heads_local_, hd, eps);
  at::Tensor O = parallel::attention(Q, K, V, s.local_lens, *ctx_, s.key_masks).reshape({B, L + N, heads_local_ * hd});

  // t + gate * (a @ l^T + the layer's bias), summed over the TP group first (nn::linear_residual).
  const auto tp = parallel::tp_sum_of(*ctx_);
  auto residual = [&](const at::Tensor& t, const at::Tensor& gate, const at::Tensor& a, const Linear& l) {
    return nn::linear_residual(t, a, l.w, l.b, gate, tp);
  };
  // t + gate * GELU MLP(x).
  auto mlp = [&](const at::Tensor& t, const at::Tensor& gate, const at::Tensor& x, const Linear& in, const Linear& out) {
    return nn::gelu_tanh_mlp_residual(t, x, in.w, in.b, out.w, out.b, gate, tp);
  };
  s.x = residual(s.x, m[2], O.narrow(1, L, N), b.to_out);
  s.x = mlp(s.x, m[5], nn::layer_norm_modulate(s.x, m[4], m[3], eps), b.img_mlp_in, b.img_mlp_out);
  // The last block's text output is discarded by the model (§1.4 step 9): skip its dead compute.
  if (i + 1 < cfg_.num_layers) {
    s.c = residual(s.c, mc[2], O.narrow(1, 0, L), b.to_add_out);
    s.c = mlp(s.c, mc[5], nn::layer_norm_modulate(s.c, mc[4], mc[3], eps), b.txt_mlp_in, b.txt_mlp_out);
  }
  if (s.x.scalar_type() == at::kHalf) {  // the reference clips fp16 activations (§1.5)
    s.x.clamp_(-65504, 65504);
    s.c.clamp_(-65504, 65504);
  }
}

void Transformer::run_blocks(State& s, int64_t begin, int64_t end) const {
  for (int64_t i = begin; i < end; ++i) {
    block(blocks_[i], i, s);
    runtime::trace(fmt::format("transformer_blocks.{}.x", i), s.x);  // [B, N_loc, D]
    runtime::trace(fmt::format("transformer_blocks.{}.c", i), s.c);  // [B, L_loc, D]
  }
}

at::Tensor Transformer::finish(const State& s) const {
  auto e = nn::linear(at::silu(s.temb), norm_out_.w, norm_out_.b).chunk(2, -1);  // (scale, shift): scale first
  at::Tensor h = nn::layer_norm_modulate(s.x, (1 + e[0]).unsqueeze(1).contiguous(), e[1].unsqueeze(1).contiguous(),
                                         TransformerConfig::kEps);
  at::Tensor out = nn::linear(h, proj_out_.w, proj_out_.b);  // [B, N_loc, out_dim]
  runtime::trace("transformer.out_local", out);
  return parallel::gather_sequence(out, 1, s.img_full, *ctx_);
}

at::Tensor Transformer::forward(const TransformerInput& in, cache::Cache* cache, int branch) const {
  State s = prepare(in);
  blocks_.may_skip_from(cache::decision_block(cache));  // --offload: no copy runs past DBCache's decision
  if (cache == nullptr) {
    // As one CUDA graph where no collective, copy or host mask runs inside (the padded-key masks are CPU tensors).
    const bool eligible = ctx_->mesh().model_size() == 1 && !blocks_.offloaded() && s.key_masks.empty();
    std::vector<at::Tensor*> state{&s.x, &s.c, &s.temb, &s.rope};
    if (s.mods.defined()) state.push_back(&s.mods);  // this step's row of the table: copied in, not captured
    graphs_.run(eligible, state, {}, [&] { run_blocks(s, 0, cfg_.num_layers); });
  } else {  // DBCache (cache-dit-semantics §5.1): one dual-stream list, the image stream decides
    cache->run("transformer_blocks", cfg_.num_layers, 1.0, branch, s.x, &s.c,
               [&](int64_t b, int64_t e) { run_blocks(s, b, e); });
  }
  return finish(s);
}

}  // namespace ditgen::qwen_image
