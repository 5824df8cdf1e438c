#include "models/ltx2/connectors.h"

#include "lib/io/json_fields.h"
#include "lib/nn/ops.h"
#include "lib/runtime/error.h"

namespace ditgen::ltx2 {

using nn::Init;
using nn::Shard;

namespace {
constexpr double kEps = 1e-6;
constexpr double kScale = 8.0;  // the pipeline's normalisation scale (§3 step 2)
}  // namespace

ConnectorsConfig ConnectorsConfig::from_json(const nlohmann::json& j, const std::string& where) {
  DITGEN_CHECK(j.is_object(), "{}: the connectors config must be a JSON object", where);
  ConnectorsConfig c;
  const io::JsonFields read(j, where);
  read("caption_channels", c.caption_channels);
  read("text_proj_in_factor", c.text_proj_in_factor);
  for (auto [name, b] : {std::pair<std::string, Branch*>{"video", &c.video}, {"audio", &c.audio}}) {
    const std::string p = name + "_connector_";
    read(p + "num_attention_heads", b->heads);
    read(p + "attention_head_dim", b->head_dim);
    read(p + "num_layers", b->layers);
    read(p + "num_learnable_registers", b->registers);
    DITGEN_CHECK(b->heads > 0 && b->head_dim > 0 && b->head_dim % 2 == 0 && b->layers >= 0,
                 "{}: {}num_attention_heads / attention_head_dim (even) / num_layers must be positive", where, p);
    DITGEN_CHECK(b->heads * b->head_dim == c.caption_channels,
                 "{}: {}num_attention_heads x attention_head_dim = {} must equal caption_channels {}", where, p,
                 b->heads * b->head_dim, c.caption_channels);
    DITGEN_CHECK(b->registers > 0, "{}: {}num_learnable_registers must be positive (LTX-2.0 fills the padding with "
                 "registers; a register-free connector is not supported)", where, p);
  }
  c.rope_base_seq_len = io::json_get<double>(j, "connector_rope_base_seq_len", c.rope_base_seq_len, where);
  c.rope.theta = io::json_get<double>(j, "rope_theta", c.rope.theta, where);
  c.rope.double_precision = io::json_get<bool>(j, "rope_double_precision", c.rope.double_precision, where);
  const std::string rope = io::json_get<std::string>(j, "rope_type", "split", where);
  DITGEN_CHECK(rope == "split" || rope == "interleaved", "{}: rope_type must be 'split' or 'interleaved', got '{}'",
               where, rope);
  c.rope.split = rope == "split";
  for (const char* flag : {"per_modality_projections", "proj_bias"})
    DITGEN_CHECK(!io::json_get<bool>(j, flag, false, where),
                 "{}: '{}' is true: that is an LTX-2.3+ connector, not supported by `ditgen ltx2` (LTX-2.0)", where, flag);
  DITGEN_CHECK(c.caption_channels > 0 && c.text_proj_in_factor > 0 && c.rope_base_seq_len > 0 && c.rope.theta > 0,
               "{}: caption_channels, text_proj_in_factor, connector_rope_base_seq_len and rope_theta must be "
               "positive", where);
  return c;
}

Connectors::Branch Connectors::load_branch(const nn::Weights& wb, const ConnectorsConfig::Branch& cb) const {
  const int64_t C = cfg_.caption_channels;
  Branch b;
  b.registers = wb.get("learnable_registers", {cb.registers, C}, Shard::replicated(), Init::Embedding);
  for (int64_t i = 0; i < cb.layers; ++i) {
    const nn::Weights blk = wb.pp("transformer_blocks").pp(i);
    b.blocks.push_back({load_attention(blk.pp("attn1"), C, C, cb.heads, cb.head_dim, C, 1),
                        load_feed_forward(blk.pp("ff"), C, 4 * C)});
  }
  b.heads = cb.heads;
  return b;
}

Connectors::Connectors(const ConnectorsConfig& config, const nn::Weights& wb) : cfg_(config) {
  const int64_t C = cfg_.caption_channels;
  text_proj_in_ = wb.get("text_proj_in.weight", {C, C * cfg_.text_proj_in_factor});
  video_ = load_branch(wb.pp("video_connector"), cfg_.video);
  audio_ = load_branch(wb.pp("audio_connector"), cfg_.audio);
}

at::Tensor Connectors::run(const Branch& b, const at::Tensor& p, const at::Tensor& lengths) const {
  // p [B, L, C] projected states, left padded; lengths [B] real tokens per sample (CPU int64).
  const int64_t B = p.size(0), L = p.size(1), R = b.registers.size(0);
  DITGEN_CHECK(L % R == 0, "the text length {} must be a multiple of the connector's {} registers (--max-sequence-length)",
               L, R);
  // Real tokens to the front in order; position q >= n takes register q mod R (§3 step 5a).
  at::Tensor tiled = b.registers.to(p.scalar_type()).repeat({L / R, 1});  // [L, C]
  std::vector<at::Tensor> rows;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t n = lengths[i].item<int64_t>();
    rows.push_back(at::cat({p[i].narrow(0, L - n, n), tiled.narrow(0, n, L - n)}, 0));
  }
  at::Tensor z = at::stack(rows, 0);  // [B, L, C]
  // 1-D RoPE at positions p / base_seq_len; no attention mask from here on.
  const at::Tensor grid = (at::arange(L, at::kDouble) / cfg_.rope_base_seq_len).unsqueeze(1);
  const auto single = parallel::Context::single();
  const Rope rope = rope_table(grid, cfg_.caption_channels, b.heads, cfg_.rope, *single, p.device());
  for (const auto& blk : b.blocks) {
    z = out_residual(blk.attn, z,
                     attend(blk.attn, rms(z, kEps), rms(z, kEps), &rope, &rope, Keys::Whole, L, cfg_.rope.split, kEps,
                            *single),
                     {}, *single);
    z = ff_residual(blk.ff, z, rms(z, kEps), {}, *single);
  }
  return rms(z, kEps);
}

Connectors::Output Connectors::forward(const at::Tensor& states, const at::Tensor& mask) const {
  const int64_t C = cfg_.caption_channels, K = cfg_.text_proj_in_factor;
  DITGEN_CHECK(states.dim() == 3 && states.size(2) == C * K, "connectors: states must be [B, L, {}], got {}", C * K,
               io::shape_str(states.sizes()));
  const int64_t B = states.size(0), L = states.size(1);
  DITGEN_CHECK(mask.dim() == 2 && mask.size(0) == B && mask.size(1) == L, "connectors: mask must be [{}, {}], got {}", B,
               L, io::shape_str(mask.sizes()));
  const at::Device dev = text_proj_in_.device();
  const at::Tensor lengths = mask.to(at::kCPU).ne(0).sum(-1);  // [B]
  // Per sample and layer: mean, min and max over the real tokens x all C features, in fp32 (§3 step 2).
  at::Tensor h = states.to(dev, at::kFloat).view({B, L, C, K});
  at::Tensor valid = (mask.to(dev).ne(0)).view({B, L, 1, 1});  // left padding: the real tokens are the last n
  const at::Tensor count = lengths.to(dev, at::kFloat).view({B, 1, 1, 1}) * static_cast<double>(C);
  const at::Tensor mean = at::where(valid, h, at::zeros({}, h.options())).sum({1, 2}, true) / (count + kEps);
  const double inf = std::numeric_limits<double>::infinity();
  const at::Tensor mn = at::where(valid, h, at::full({}, inf, h.options())).amin({1, 2}, true);
  const at::Tensor mx = at::where(valid, h, at::full({}, -inf, h.options())).amax({1, 2}, true);
  at::Tensor hn = (h - mean) * kScale / (mx - mn + kEps);
  hn = at::where(valid, hn, at::zeros({}, hn.options())).view({B, L, C * K}).to(text_proj_in_.scalar_type());
  const at::Tensor p = nn::linear(hn, text_proj_in_);  // [B, L, C], shared by both branches
  return {run(video_, p, lengths), run(audio_, p, lengths), at::ones({B, L}, at::kLong)};
}

}  // namespace ditgen::ltx2
