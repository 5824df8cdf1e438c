#include "models/ltx2/transformer.h"

#include <algorithm>
#include <cmath>

#include <spdlog/spdlog.h>

#include "lib/io/json.h"
#include "lib/nn/embeddings.h"
#include "lib/nn/ops.h"
#include "lib/pipeline/memory_limit.h"
#include "lib/runtime/error.h"
#include "lib/runtime/trace.h"

namespace ditgen::ltx2 {

using nn::Init;
using nn::Shard;

TransformerConfig TransformerConfig::from_json(const nlohmann::json& j, const std::string& where) {
  DITGEN_CHECK(j.is_object(), "{}: the transformer config must be a JSON object", where);
  TransformerConfig c;
  auto i64 = [&](const char* k, int64_t& v) { v = io::json_get<int64_t>(j, k, v, where); };
  auto f64 = [&](const char* k, double& v) { v = io::json_get<double>(j, k, v, where); };
  i64("in_channels", c.in_channels);
  c.out_channels = io::json_get<int64_t>(j, "out_channels", c.in_channels, where);
  i64("num_attention_heads", c.num_attention_heads);
  i64("attention_head_dim", c.attention_head_dim);
  i64("cross_attention_dim", c.cross_attention_dim);
  i64("audio_in_channels", c.audio_in_channels);
  c.audio_out_channels = io::json_get<int64_t>(j, "audio_out_channels", c.audio_in_channels, where);
  i64("audio_num_attention_heads", c.audio_num_attention_heads);
  i64("audio_attention_head_dim", c.audio_attention_head_dim);
  i64("audio_cross_attention_dim", c.audio_cross_attention_dim);
  i64("num_layers", c.num_layers);
  i64("caption_channels", c.caption_channels);
  c.vae_scale_factors = io::json_get<std::vector<int64_t>>(j, "vae_scale_factors", c.vae_scale_factors, where);
  f64("pos_embed_max_pos", c.pos_embed_max_pos);
  f64("audio_pos_embed_max_pos", c.audio_pos_embed_max_pos);
  f64("base_height", c.base_height);
  f64("base_width", c.base_width);
  i64("audio_scale_factor", c.audio_scale_factor);
  f64("audio_sampling_rate", c.audio_sampling_rate);
  f64("audio_hop_length", c.audio_hop_length);
  i64("causal_offset", c.causal_offset);
  f64("timestep_scale_multiplier", c.timestep_scale_multiplier);
  f64("cross_attn_timestep_scale_multiplier", c.cross_attn_timestep_scale_multiplier);
  f64("rope_theta", c.rope_theta);
  c.rope_double_precision = io::json_get<bool>(j, "rope_double_precision", c.rope_double_precision, where);
  f64("norm_eps", c.norm_eps);
  const std::string rope = io::json_get<std::string>(j, "rope_type", "interleaved", where);
  DITGEN_CHECK(rope == "split" || rope == "interleaved", "{}: rope_type must be 'split' or 'interleaved', got '{}'",
               where, rope);
  c.rope_split = rope == "split";

  // LTX-2.0 only: the 2.3+ switches change the block (§0); refuse them rather than run them wrongly.
  for (const char* flag : {"gated_attn", "cross_attn_mod", "audio_gated_attn", "audio_cross_attn_mod", "perturbed_attn",
                           "use_keyframes_abs_pos_embedding"})
    DITGEN_CHECK(!io::json_get<bool>(j, flag, false, where), "{}: '{}' is true: that is an LTX-2.3+ feature, not "
                 "supported by `ditgen ltx2` (LTX-2.0)", where, flag);
  for (const char* flag : {"use_prompt_embeddings", "use_prompt_adaln_single", "ff_bias", "audio_ff_bias",
                           "attention_bias", "attention_out_bias"})
    DITGEN_CHECK(io::json_get<bool>(j, flag, true, where), "{}: '{}' is false; LTX-2.0 has it on", where, flag);
  for (const char* key : {"patch_size", "patch_size_t", "audio_patch_size", "audio_patch_size_t"})
    DITGEN_CHECK(io::json_get<int64_t>(j, key, 1, where) == 1, "{}: '{}' must be 1 (LTX-2.0)", where, key);
  const std::string qk = io::json_get<std::string>(j, "qk_norm", "rms_norm_across_heads", where);
  DITGEN_CHECK(qk == "rms_norm_across_heads", "{}: qk_norm '{}' is not supported (rms_norm_across_heads)", where, qk);
  const std::string act = io::json_get<std::string>(j, "activation_fn", "gelu-approximate", where);
  DITGEN_CHECK(act == "gelu-approximate", "{}: activation_fn '{}' is not supported (gelu-approximate)", where, act);

  DITGEN_CHECK(c.in_channels > 0 && c.out_channels > 0 && c.audio_in_channels > 0 && c.audio_out_channels > 0 &&
                   c.num_attention_heads > 0 && c.attention_head_dim > 0 && c.audio_num_attention_heads > 0 &&
                   c.audio_attention_head_dim > 0 && c.num_layers >= 0 && c.caption_channels > 0,
               "{}: channel, head and layer counts must be positive", where);
  DITGEN_CHECK(c.attention_head_dim % 2 == 0 && c.audio_attention_head_dim % 2 == 0,
               "{}: attention head dims must be even (RoPE pairs)", where);
  DITGEN_CHECK(c.cross_attention_dim == c.inner_dim(),
               "{}: cross_attention_dim {} must equal num_attention_heads x attention_head_dim = {} (the caption "
               "projection's width)",
               where, c.cross_attention_dim, c.inner_dim());
  DITGEN_CHECK(c.audio_cross_attention_dim == c.audio_inner_dim(),
               "{}: audio_cross_attention_dim {} must equal audio heads x head dim = {}", where,
               c.audio_cross_attention_dim, c.audio_inner_dim());
  DITGEN_CHECK(c.vae_scale_factors.size() == 3 && c.vae_scale_factors[0] > 0 && c.vae_scale_factors[1] > 0 &&
                   c.vae_scale_factors[2] > 0,
               "{}: vae_scale_factors must be three positive integers (time, height, width)", where);
  DITGEN_CHECK(c.pos_embed_max_pos > 0 && c.audio_pos_embed_max_pos > 0 && c.base_height > 0 && c.base_width > 0 &&
                   c.audio_sampling_rate > 0 && c.audio_hop_length > 0 && c.audio_scale_factor > 0 &&
                   c.rope_theta > 0 && c.norm_eps > 0 && c.timestep_scale_multiplier > 0,
               "{}: positions, rates, theta and eps must be positive", where);
  return c;
}

// ---- RoPE (§1.8-1.9, §10.1) -----------------------------------------------------------------------

namespace {

// Midpoint of the causal span a latent index covers in its source frames: [max(s*i + o - s, 0), s*(i+1) + o - s).
double causal_mid(int64_t i, int64_t s, int64_t offset) {
  const double start = static_cast<double>(std::max<int64_t>(s * i + offset - s, 0));
  const double end = static_cast<double>(s * (i + 1) + offset - s);
  return 0.5 * (start + end);
}

}  // namespace

at::Tensor video_grid(const TransformerConfig& c, int64_t frames, int64_t height, int64_t width, double fps) {
  at::Tensor g = at::empty({frames * height * width, 3}, at::kDouble);
  auto a = g.accessor<double, 2>();
  const int64_t st = c.vae_scale_factors[0], sh = c.vae_scale_factors[1], sw = c.vae_scale_factors[2];
  int64_t n = 0;
  for (int64_t f = 0; f < frames; ++f) {
    const double t = causal_mid(f, st, c.causal_offset) / fps;  // seconds
    for (int64_t h = 0; h < height; ++h)
      for (int64_t w = 0; w < width; ++w, ++n) {
        a[n][0] = t / c.pos_embed_max_pos;
        a[n][1] = (static_cast<double>(sh * h) + 0.5 * sh) / c.base_height;
        a[n][2] = (static_cast<double>(sw * w) + 0.5 * sw) / c.base_width;
      }
  }
  return g;
}

at::Tensor audio_grid(const TransformerConfig& c, int64_t audio_frames, double max_pos) {
  at::Tensor g = at::empty({audio_frames, 1}, at::kDouble);
  auto a = g.accessor<double, 2>();
  const double seconds_per_mel = c.audio_hop_length / c.audio_sampling_rate;
  for (int64_t f = 0; f < audio_frames; ++f)
    a[f][0] = causal_mid(f, c.audio_scale_factor, c.causal_offset) * seconds_per_mel / max_pos;
  return g;
}

at::Tensor Transformer::attend(const Attention& a, const at::Tensor& x, const at::Tensor& kv, const Rope* q_rope,
                               const Rope* k_rope, Keys keys, int64_t kv_full) const {
  return ltx2::attend(a, x, kv, q_rope, k_rope, keys, kv_full, cfg_.rope_split, cfg_.norm_eps, *ctx_);
}

Transformer::Ropes Transformer::ropes(int64_t frames, int64_t height, int64_t width, double fps,
                                      int64_t audio_frames) const {
  const double cross_max = std::max(cfg_.pos_embed_max_pos, cfg_.audio_pos_embed_max_pos);
  const at::Tensor vg = video_grid(cfg_, frames, height, width, fps);
  // Cross-modal attention uses only the time axis, over the larger of the two position ranges.
  const at::Tensor vt = vg.narrow(1, 0, 1) * (cfg_.pos_embed_max_pos / cross_max);
  const RopeSettings rs{cfg_.rope_theta, cfg_.rope_double_precision, cfg_.rope_split};
  const at::Device dev = proj_in_.w.weight.device();
  auto table = [&](const at::Tensor& grid, int64_t dim, int64_t heads) {
    return rope_table(grid, dim, heads, rs, *ctx_, dev);
  };
  Ropes r;
  r.video = table(vg, cfg_.inner_dim(), cfg_.num_attention_heads);
  r.audio = table(audio_grid(cfg_, audio_frames, cfg_.audio_pos_embed_max_pos), cfg_.audio_inner_dim(),
                  cfg_.audio_num_attention_heads);
  r.cross_video = table(vt, cfg_.audio_cross_attention_dim, cfg_.audio_num_attention_heads);
  r.cross_audio = table(audio_grid(cfg_, audio_frames, cross_max), cfg_.audio_cross_attention_dim,
                        cfg_.audio_num_attention_heads);
  return r;
}

// ---- construction -------------------------------------------------------------------------------

Transformer::AdaLN Transformer::adaln(const nn::Weights& wb, const std::string& name, int64_t width, int64_t n) const {
  const nn::Weights a = wb.pp(name);
  return {load_linear(a, "emb.timestep_embedder.linear_1", width, 256),
          load_linear(a, "emb.timestep_embedder.linear_2", width, width), load_linear(a, "linear", n * width, width)};
}

Transformer::Transformer(const TransformerConfig& config, const nn::Weights& wb_in, std::shared_ptr<parallel::Context> ctx,
                         bool fp8, std::shared_ptr<nn::BlockStreamer> offload)
    : cfg_(config), ctx_(std::move(ctx)), blocks_(std::move(offload)) {
  const int tp = ctx_->mesh().shape().tp;
  const int u = ctx_->mesh().shape().ulysses;
  for (int64_t heads : {cfg_.num_attention_heads, cfg_.audio_num_attention_heads}) {
    DITGEN_CHECK(heads % tp == 0, "--tp {} does not divide the transformer's {} attention heads; choose a tp that "
                 "divides {}", tp, heads, heads);
    DITGEN_CHECK(heads / tp % u == 0,
                 "--ulysses {} does not divide the {} heads each tp rank holds ({} heads / tp {}); choose ulysses and tp "
                 "whose product divides {}", u, heads / tp, heads, tp, heads);
  }
  const nn::Weights wb = wb_in.with_tp(ctx_->tp_group());
  const int64_t D = cfg_.inner_dim(), Da = cfg_.audio_inner_dim(), C = cfg_.caption_channels;
  const int64_t H = cfg_.num_attention_heads, hd = cfg_.attention_head_dim;
  const int64_t Ha = cfg_.audio_num_attention_heads, hda = cfg_.audio_attention_head_dim;

  proj_in_ = load_linear(wb, "proj_in", D, cfg_.in_channels);
  audio_proj_in_ = load_linear(wb, "audio_proj_in", Da, cfg_.audio_in_channels);
  proj_out_ = load_linear(wb, "proj_out", cfg_.out_channels, D);
  audio_proj_out_ = load_linear(wb, "audio_proj_out", cfg_.audio_out_channels, Da);
  caption1_ = load_linear(wb, "caption_projection.linear_1", D, C);
  caption2_ = load_linear(wb, "caption_projection.linear_2", D, D);
  audio_caption1_ = load_linear(wb, "audio_caption_projection.linear_1", Da, C);
  audio_caption2_ = load_linear(wb, "audio_caption_projection.linear_2", Da, Da);
  time_ = adaln(wb, "time_embed", D, 6);
  audio_time_ = adaln(wb, "audio_time_embed", Da, 6);
  av_video_ss_ = adaln(wb, "av_cross_attn_video_scale_shift", D, 4);
  av_audio_ss_ = adaln(wb, "av_cross_attn_audio_scale_shift", Da, 4);
  av_video_gate_ = adaln(wb, "av_cross_attn_video_a2v_gate", D, 1);
  av_audio_gate_ = adaln(wb, "av_cross_attn_audio_v2a_gate", Da, 1);
  scale_shift_table_ = wb.get("scale_shift_table", {2, D}, Shard::replicated(), Init::Bias);
  audio_scale_shift_table_ = wb.get("audio_scale_shift_table", {2, Da}, Shard::replicated(), Init::Bias);

  blocks_.reserve(cfg_.num_layers);
  std::array<std::vector<at::Tensor>, 4> tables;  // stacked into tables_ after the loop
  for (int64_t i = 0; i < cfg_.num_layers; ++i) {
    const nn::Weights b = wb.pp("transformer_blocks").pp(i);
    Block k;
    k.attn1 = load_attention(b.pp("attn1"), D, D, H, hd, D, tp, fp8);
    k.audio_attn1 = load_attention(b.pp("audio_attn1"), Da, Da, Ha, hda, Da, tp, fp8);
    k.attn2 = load_attention(b.pp("attn2"), D, D, H, hd, D, tp, fp8);
    k.audio_attn2 = load_attention(b.pp("audio_attn2"), Da, Da, Ha, hda, Da, tp, fp8);
    k.a2v = load_attention(b.pp("audio_to_video_attn"), D, Da, Ha, hda, D, tp, fp8);  // Q video, K/V audio
    k.v2a = load_attention(b.pp("video_to_audio_attn"), Da, D, Ha, hda, Da, tp, fp8);  // Q audio, K/V video
    k.ff = load_feed_forward(b.pp("ff"), D, 4 * D, fp8);
    k.audio_ff = load_feed_forward(b.pp("audio_ff"), Da, 4 * Da, fp8);
    tables[0].push_back(b.get("scale_shift_table", {6, D}, Shard::replicated(), Init::Bias));
    tables[1].push_back(b.get("audio_scale_shift_table", {6, Da}, Shard::replicated(), Init::Bias));
    tables[2].push_back(b.get("video_a2v_cross_attn_scale_shift_table", {5, D}, Shard::replicated(), Init::Bias));
    tables[3].push_back(b.get("audio_a2v_cross_attn_scale_shift_table", {5, Da}, Shard::replicated(), Init::Bias));
    blocks_.push_back(std::move(k));
  }
  tables_ = {at::stack(tables[0]), at::stack(tables[1]), at::stack(tables[2]), at::stack(tables[3])};
}

// ---- forward ------------------------------------------------------------------------------------

std::pair<at::Tensor, at::Tensor> Transformer::embed(const AdaLN& a, const at::Tensor& t, at::ScalarType dt) const {
  const int64_t B = t.size(0), T = t.dim() == 2 ? t.size(1) : 1;
  at::Tensor f = nn::timestep_features(t.reshape({B * T}), 256).to(dt);  // [B*T, 256], cosines first (§1.4)
  at::Tensor e = nn::linear(at::silu(nn::linear(f, a.t1.w, a.t1.b)), a.t2.w, a.t2.b);  // [B*T, W]
  return {nn::linear(at::silu(e), a.mod.w, a.mod.b).view({B, T, -1}), e.view({B, T, -1})};
}

namespace {

// get_mod for the blocks [begin, end): block i's rows of `tables` [L, k, W] plus the modulation [B, T, k*W]
// viewed [B, T, k, W], as k contiguous tensors [B, T, W] (T = 1: one timestep per sample; T = this rank's
// tokens: per-token timesteps). The rows in `scale_rows` come as 1 + scale, the multiplier the modulation
// uses, rounded as (table + mod) + 1 like the reference. With one timestep per sample every block's rows are
// made at once, a few kernels a forward instead of a dozen a block; per-token rows (the size of the
// activations, times the blocks) are made block by block.
class Modulation {
 public:
  Modulation(const at::Tensor& tables, const at::Tensor& mod, std::vector<int64_t> scale_rows, int64_t begin,
             int64_t end)
      : tables_(tables), mod_(mod), scale_rows_(std::move(scale_rows)), begin_(begin) {
    if (mod.size(1) == 1) all_ = rows(tables.narrow(0, begin, end - begin));
  }
  std::vector<at::Tensor> block(int64_t i) const {
    const at::Tensor m = all_.defined() ? all_[i - begin_] : rows(tables_.narrow(0, i, 1))[0];  // [k, B, T, W]
    std::vector<at::Tensor> out;
    for (int64_t r = 0; r < m.size(0); ++r) out.push_back(m[r]);
    return out;
  }

 private:
  at::Tensor rows(const at::Tensor& t) const {  // [n, k, W] -> [n, k, B, T, W]
    const int64_t n = t.size(0), k = t.size(1), W = t.size(2), B = mod_.size(0), T = mod_.size(1);
    // Into rows laid out in this order (the sum alone would follow mod's [B, T, k, W] layout for B > 1, and
    // every norm would copy its rows).
    at::Tensor m = at::empty({n, k, B, T, W}, t.options().dtype(at::result_type(t, mod_)));
    at::add_out(m, t.view({n, k, 1, 1, W}), mod_.view({B, T, k, W}).permute({2, 0, 1, 3}).unsqueeze(0));
    for (int64_t r : scale_rows_) m.select(1, r).add_(1);
    return m;
  }
  at::Tensor tables_, mod_, all_;
  std::vector<int64_t> scale_rows_;
  int64_t begin_;
};

at::Tensor modulate(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& shift) {
  return at::addcmul(shift, x, 1 + scale);
}

}  // namespace

std::pair<TextContext, TextContext> Transformer::text_contexts(const TransformerInput& in, at::ScalarType dt,
                                                                const at::Device& dev) const {
  // Through the caption projections (GELU-tanh MLPs).
  auto caption = [&](const at::Tensor& t, const Linear& l1, const Linear& l2) {
    return nn::linear(at::gelu(nn::linear(t.to(dev, dt), l1.w, l1.b), "tanh"), l2.w, l2.b);
  };
  at::Tensor key_mask;  // the additive -10000 bias of padded text keys is a hard mask in effect
  if (in.encoder_mask.defined()) {
    at::Tensor m = in.encoder_mask.to(at::kCPU).ne(0);
    if (!m.all().item<bool>()) key_mask = m;
  }
  return {text_context(caption(in.encoder_hidden_states, caption1_, caption2_), key_mask),
          text_context(caption(in.audio_encoder_hidden_states, audio_caption1_, audio_caption2_), key_mask)};
}

bool Transformer::TextCache::holds(const TransformerInput& in) const {
  auto same = [](const at::Tensor& a, const at::Tensor& b) { return a.defined() ? a.is_same(b) : !b.defined(); };
  return same(video_source, in.encoder_hidden_states) && same(audio_source, in.audio_encoder_hidden_states) &&
         same(mask, in.encoder_mask) && video_version == in.encoder_hidden_states._version() &&
         audio_version == in.audio_encoder_hidden_states._version();
}

std::vector<at::Tensor> Transformer::TextCache::tensors() const {
  std::vector<at::Tensor> all;
  for (const auto* stream : {&video, &audio})
    for (const TextKeys& t : *stream)
      for (const auto* kv : {&t.k, &t.v}) all.insert(all.end(), kv->begin(), kv->end());
  return all;
}

const Transformer::TextCache* Transformer::text_cache(const TransformerInput& in, int branch, at::ScalarType dt,
                                                      const at::Device& dev,
                                                      std::pair<TextContext, TextContext>& contexts) const {
  DITGEN_CHECK(branch == 0 || branch == 1, "internal: CFG branch {}", branch);
  TextCache& c = text_caches_[static_cast<size_t>(branch)];
  if (c.holds(in)) return &c;
  contexts = text_contexts(in, dt, dev);
  const TextContext &ctx_v = contexts.first, &ctx_a = contexts.second;
  // Its size: every block's keys and values of both streams for the visible text rows.
  auto rows = [](const TextContext& t) {
    int64_t n = t.all.defined() ? t.all.size(0) * t.all.size(1) : 0;
    for (const at::Tensor& item : t.items) n += item.size(1);
    return n;
  };
  const int64_t tp = ctx_->mesh().shape().tp, elem = static_cast<int64_t>(c10::elementSize(dt));
  const int64_t bytes = 2 * elem * cfg_.num_layers *
                        (rows(ctx_v) * cfg_.inner_dim() / tp + rows(ctx_a) * cfg_.audio_inner_dim() / tp);
  const std::vector<at::Tensor> old = c.tensors();
  int64_t held = 0;
  for (const at::Tensor& t : old) held += t.defined() ? t.numel() * elem : 0;
  const int64_t room_bytes = pipeline::allocatable_bytes(dev);
  const bool fits = bytes <= held || room_bytes < 0 || bytes - held <= room_bytes / 4;
  if (!parallel::on_every_rank(fits, ctx_->tp(), dev)) {  // the keys' QK norm is a TP collective
    spdlog::debug("LTX-2 branch {}: the text keys ({:.2f} GiB) are projected in every step ({:.2f} GiB room)", branch,
                  bytes / 1073741824.0, room_bytes / 1073741824.0);
    c = TextCache();
    return nullptr;
  }
  spdlog::debug("LTX-2 branch {}: the text keys ({:.2f} GiB) are kept for the prompt ({:.2f} GiB room)", branch,
                bytes / 1073741824.0, room_bytes / 1073741824.0);
  TextCache fresh;
  fresh.video_source = in.encoder_hidden_states;
  fresh.audio_source = in.audio_encoder_hidden_states;
  fresh.mask = in.encoder_mask;
  fresh.video_version = in.encoder_hidden_states._version();
  fresh.audio_version = in.audio_encoder_hidden_states._version();
  for (int64_t i = 0; i < cfg_.num_layers; ++i) {
    const Block& b = blocks_[i];
    fresh.video.push_back(text_keys(b.attn2, ctx_v, cfg_.norm_eps, *ctx_));
    fresh.audio.push_back(text_keys(b.audio_attn2, ctx_a, cfg_.norm_eps, *ctx_));
  }
  const std::vector<at::Tensor> now = fresh.tensors();
  bool same_shapes = old.size() == now.size();
  for (size_t k = 0; k < old.size() && same_shapes; ++k)
    same_shapes = old[k].defined() == now[k].defined() && (!old[k].defined() || old[k].sizes() == now[k].sizes());
  if (same_shapes) {  // into the slot's tensors (their addresses stay)
    for (size_t k = 0; k < old.size(); ++k)
      if (old[k].defined()) old[k].copy_(now[k]);
    fresh.video = std::move(c.video);
    fresh.audio = std::move(c.audio);
  }
  c = std::move(fresh);
  return &c;
}

Transformer::Output Transformer::forward(const TransformerInput& in, cache::Cache* cache, int branch) const {
  const at::ScalarType dt = proj_in_.w.weight.scalar_type();
  const at::Device dev = proj_in_.w.weight.device();
  const int64_t B = in.hidden_states.size(0), Nv = in.hidden_states.size(1), Na = in.audio_hidden_states.size(1);
  DITGEN_CHECK(in.hidden_states.dim() == 3 && in.hidden_states.size(2) == cfg_.in_channels,
               "transformer: hidden_states must be [B, N, {}], got {}", cfg_.in_channels,
               io::shape_str(in.hidden_states.sizes()));
  DITGEN_CHECK(in.audio_hidden_states.dim() == 3 && in.audio_hidden_states.size(0) == B &&
                   in.audio_hidden_states.size(2) == cfg_.audio_in_channels,
               "transformer: audio_hidden_states must be [{}, Na, {}], got {}", B, cfg_.audio_in_channels,
               io::shape_str(in.audio_hidden_states.sizes()));
  DITGEN_CHECK(in.frames * in.height * in.width == Nv, "transformer: the latent grid {}x{}x{} holds {} tokens, not {}",
               in.frames, in.height, in.width, in.frames * in.height * in.width, Nv);
  for (const at::Tensor* t : {&in.encoder_hidden_states, &in.audio_encoder_hidden_states})
    DITGEN_CHECK(t->dim() == 3 && t->size(0) == B && t->size(2) == cfg_.caption_channels,
                 "transformer: text contexts must be [{}, L, {}], got {}", B, cfg_.caption_channels,
                 io::shape_str(t->sizes()));

  // Timestep embeddings (§1.4): all six from the (video / audio) timestep; the A/V gates see it scaled
  // by cross_attn_timestep_scale_multiplier / timestep_scale_multiplier. A per-token video timestep
  // [B, Nv] is split over the CP group like the tokens: its embeddings are per local token.
  DITGEN_CHECK((in.timestep.dim() == 1 && in.timestep.size(0) == B) ||
                   (in.timestep.dim() == 2 && in.timestep.size(0) == B && in.timestep.size(1) == Nv),
               "transformer: timestep must be [{}] or [{}, {}], got {}", B, B, Nv, io::shape_str(in.timestep.sizes()));
  DITGEN_CHECK(in.timestep.dim() == 1 || in.audio_timestep.defined(),
               "transformer: a per-token video timestep needs its own audio_timestep [B]");
  // (Not const, like x and y below: the inputs of the blocks' CUDA graph, which a replay swaps for its own copies.)
  at::Tensor tv = in.timestep.dim() == 2 ? parallel::split_sequence(in.timestep.to(at::kFloat), 1, *ctx_).to(dev)
                                         : in.timestep.to(dev, at::kFloat);
  at::Tensor ta = in.audio_timestep.defined() ? in.audio_timestep.to(dev, at::kFloat) : tv;
  const double gate_scale = cfg_.cross_attn_timestep_scale_multiplier / cfg_.timestep_scale_multiplier;
  at::Tensor temb_v, e_v, temb_a, e_a, ca_v, ca_a, gate_v, gate_a;

  // The text's keys and values of every block, once per prompt; with --offload (the blocks streamed) each
  // block projects them as it runs.
  std::pair<TextContext, TextContext> contexts;
  const TextCache* text = nullptr;
  if (blocks_.offloaded())
    contexts = text_contexts(in, dt, dev);
  else
    text = text_cache(in, branch, dt, dev, contexts);
  const TextContext &ctx_v = contexts.first, &ctx_a = contexts.second;

  // Video and audio tokens split over the CP group once; gathered once at the end.
  at::Tensor x = parallel::split_sequence(in.hidden_states, 1, *ctx_).to(dev, dt);        // [B, Nv_loc, in]
  at::Tensor y = parallel::split_sequence(in.audio_hidden_states, 1, *ctx_).to(dev, dt);  // [B, Na_loc, in]
  // The timestep embeddings and the tokens' input projections. Inside the blocks' CUDA graph: eagerly, their
  // ~90 small kernels left the GPU waiting for the host for ~3 ms at the start of every step.
  auto embed_inputs = [&] {
    std::tie(temb_v, e_v) = embed(time_, tv, dt);
    std::tie(temb_a, e_a) = embed(audio_time_, ta, dt);
    ca_v = embed(av_video_ss_, tv, dt).first;
    ca_a = embed(av_audio_ss_, ta, dt).first;
    gate_v = embed(av_video_gate_, tv * gate_scale, dt).first;
    gate_a = embed(av_audio_gate_, ta * gate_scale, dt).first;
    x = nn::linear(x, proj_in_.w, proj_in_.b);              // [B, Nv_loc, D]
    y = nn::linear(y, audio_proj_in_.w, audio_proj_in_.b);  // [B, Na_loc, Da]
    runtime::trace("transformer.x_embedded", x);
    runtime::trace("transformer.audio_embedded", y);
  };
  const RopeKey key{in.frames, in.height, in.width, Na, in.fps};
  if (!rope_cache_ || !(key == rope_key_)) {
    rope_cache_ = std::make_shared<const Ropes>(ropes(in.frames, in.height, in.width, in.fps, Na));
    rope_key_ = key;
  }
  const Ropes& r = *rope_cache_;

  // modulate(rms(t), 1 + scale, shift) as one pass on the GPU.
  auto rms_mod = [&](const at::Tensor& t, const at::Tensor& scale1, const at::Tensor& shift) {
    return nn::rms_modulate(t, cfg_.norm_eps, scale1, shift);
  };
  // The audio stream beside the video's where nothing in the blocks needs a fixed order: no collective (one rank
  // per replica), no streamed block (--offload), no host read (--trace).
  const bool side_stream = dev.is_cuda() && nn::side_streams_on() && ctx_->mesh().model_size() == 1 &&
                           !blocks_.offloaded() && !runtime::trace_enabled();
  auto run_blocks = [&](int64_t begin, int64_t end) {
  if (begin >= end) return;  // (DBCache: an empty range)
  // shift, 1 + scale, gate (MSA), shift, 1 + scale, gate (MLP); the A/V tables' first four rows are
  // (1 + scale, shift) of a2v then of v2a, their fifth the gate.
  const Modulation mod_v(tables_.video, temb_v, {1, 4}, begin, end), mod_a(tables_.audio, temb_a, {1, 4}, begin, end);
  const Modulation av_v(tables_.video_av.narrow(1, 0, 4), ca_v, {0, 2}, begin, end);
  const Modulation av_a(tables_.audio_av.narrow(1, 0, 4), ca_a, {0, 2}, begin, end);
  const Modulation gate_av_v(tables_.video_av.narrow(1, 4, 1), gate_v, {}, begin, end);
  const Modulation gate_av_a(tables_.audio_av.narrow(1, 4, 1), gate_a, {}, begin, end);
  // Each residual's pass also makes the norms the next layers take of its result (nn::linear_residual_norms);
  // the feed-forward's, the next block's first ones.
  const double eps = cfg_.norm_eps;
  const auto plain = NormMods{{at::Tensor(), at::Tensor()}};
  // The audio stream's work (126 tokens: ~45 small kernels a block) on a CUDA stream of its own, beside the
  // video's large kernels; the two meet at the audio <-> video attention (nn::SideStream). Made after every
  // tensor it reads that lives through the blocks (the modulation rows), so it joins before they are freed.
  nn::SideStream audio(side_stream, {y});
  std::vector<at::Tensor> mv = mod_v.block(begin), ma;
  at::Tensor nx0 = rms_mod(x, mv[1], mv[0]), ny0;
  audio.run([&] {
    ma = mod_a.block(begin);
    ny0 = rms_mod(y, ma[1], ma[0]);
  });
  for (int64_t i = begin; i < end; ++i) {
    const Block& b = blocks_[i];
    const auto bi = static_cast<size_t>(i);
    // Self-attention, then the text's: each residual pass makes both norms the audio <-> video attention takes
    // of its stream (a2v then v2a inputs): both streams' norms come before either stream's update.
    auto xr = out_residual_norms(b.attn1, x, attend(b.attn1, nx0, nx0, &r.video, &r.video, Keys::Self, Nv), mv[2],
                                 eps, plain, *ctx_);
    const TextKeys tv = text ? TextKeys() : text_keys(b.attn2, ctx_v, eps, *ctx_);
    const auto cv = av_v.block(i);
    xr = out_residual_norms(b.attn2, xr.x, attend_text(b.attn2, xr.norms[0], text ? text->video[bi] : tv, eps, *ctx_),
                            {}, eps, {{cv[0], cv[1]}, {cv[2], cv[3]}}, *ctx_);
    const auto xa = std::move(xr.norms);
    nn::ResidualNorms yr;
    std::vector<at::Tensor> ya;
    ProjectedKeys a2v_keys;
    audio.run([&] {
      yr = out_residual_norms(b.audio_attn1, y, attend(b.audio_attn1, ny0, ny0, &r.audio, &r.audio, Keys::Self, Na),
                              ma[2], eps, plain, *ctx_);
      const TextKeys ta = text ? TextKeys() : text_keys(b.audio_attn2, ctx_a, eps, *ctx_);
      const auto ca = av_a.block(i);
      yr = out_residual_norms(b.audio_attn2, yr.x,
                              attend_text(b.audio_attn2, yr.norms[0], text ? text->audio[bi] : ta, eps, *ctx_), {},
                              eps, {{ca[0], ca[1]}, {ca[2], ca[3]}}, *ctx_);
      ya = std::move(yr.norms);
      a2v_keys = project_keys(b.a2v, ya[0], &r.cross_audio, cfg_.rope_split, eps, *ctx_);
    });
    // v2a's keys are the video's (large GEMMs: on the video's stream); a2v's the audio's.
    const ProjectedKeys v2a_keys = project_keys(b.v2a, xa[1], &r.cross_video, cfg_.rope_split, eps, *ctx_);
    audio.wait_main({v2a_keys.k, v2a_keys.v});
    audio.main_waits({a2v_keys.k, a2v_keys.v});
    xr = out_residual_norms(b.a2v, xr.x, attend_keys(b.a2v, xa[0], &r.cross_video, a2v_keys, Na, cfg_.rope_split, eps, *ctx_),
                            gate_av_v.block(i)[0], eps, {{mv[4], mv[3]}}, *ctx_);
    audio.run([&] {
      yr = out_residual_norms(b.v2a, yr.x, attend_keys(b.v2a, ya[1], &r.cross_audio, v2a_keys, Nv, cfg_.rope_split, eps, *ctx_),
                              gate_av_a.block(i)[0], eps, {{ma[4], ma[3]}}, *ctx_);
    });

    const at::Tensor gv = mv[5];
    if (i + 1 < end) {  // the next block's modulated norms in the feed-forward's residual pass
      mv = mod_v.block(i + 1);
      auto xf = ff_residual_norms(b.ff, xr.x, xr.norms[0], gv, eps, {{mv[1], mv[0]}}, *ctx_);
      x = xf.x, nx0 = xf.norms[0];
    } else {
      x = ff_residual(b.ff, xr.x, xr.norms[0], gv, *ctx_);
    }
    audio.run([&] {
      const at::Tensor ga = ma[5];
      if (i + 1 < end) {
        ma = mod_a.block(i + 1);
        auto yf = ff_residual_norms(b.audio_ff, yr.x, yr.norms[0], ga, eps, {{ma[1], ma[0]}}, *ctx_);
        y = yf.x, ny0 = yf.norms[0];
      } else {
        y = ff_residual(b.audio_ff, yr.x, yr.norms[0], ga, *ctx_);
      }
    });
    runtime::trace(fmt::format("transformer_blocks.{}.x", i), x);
    runtime::trace(fmt::format("transformer_blocks.{}.audio", i), y);
  }
  };
  blocks_.may_skip_from(cache::decision_block(cache));  // --offload: no copy runs past DBCache's decision
  if (cache == nullptr) {
    // As one CUDA graph where no collective or copy runs inside (one rank per replica, resident blocks).
    std::vector<at::Tensor*> state{&x, &y, &tv, &ta, &e_v, &e_a};  // (e_v, e_a: outputs only)
    // Text keys not kept: the contexts are inputs. Kept: the blocks do not read the contexts (set only when the
    // slot was just filled), and leaving them out keeps that forward's graph the one of the later forwards.
    for (TextContext* c : {&contexts.first, &contexts.second}) {
      if (text) break;
      if (c->all.defined()) state.push_back(&c->all);
      for (at::Tensor& t : c->items) state.push_back(&t);
    }
    std::vector<at::Tensor> tables = text ? text->tensors() : std::vector<at::Tensor>();
    for (const Rope* rope : {&r.video, &r.audio, &r.cross_video, &r.cross_audio}) {
      tables.push_back(rope->cos);
      tables.push_back(rope->sin);
    }
    const bool eligible = ctx_->mesh().model_size() == 1 && !blocks_.offloaded();
    graphs_.run(eligible, state, tables, [&] {
      embed_inputs();
      run_blocks(0, cfg_.num_layers);
    });
  } else {  // DBCache (cache-dit-semantics §5.1): one list; the video stream decides, the audio rides along
    embed_inputs();
    cache->run("transformer_blocks", cfg_.num_layers, 1.0, branch, x, &y, run_blocks);
  }

  // Output (§1.7): (shift, scale) = table rows + the embedded timestep, LayerNorm without affine.
  auto out = [&](const at::Tensor& t, const at::Tensor& table, const at::Tensor& e, const Linear& proj) {
    at::Tensor shift = table[0].view({1, 1, -1}) + e, scale = table[1].view({1, 1, -1}) + e;  // [B, T, W]
    return nn::linear(modulate(nn::layer_norm(t, cfg_.norm_eps), scale, shift), proj.w, proj.b);
  };
  return {parallel::gather_sequence(out(x, scale_shift_table_, e_v, proj_out_), 1, Nv, *ctx_),
          parallel::gather_sequence(out(y, audio_scale_shift_table_, e_a, audio_proj_out_), 1, Na, *ctx_)};
}

}  // namespace ditgen::ltx2
