#include "models/llm/decoder.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "lib/comm/mesh.h"
#include "lib/io/json.h"
#include "lib/io/printable.h"
#include "lib/nn/ops.h"
#include "lib/parallel/context.h"
#include "lib/runtime/error.h"

namespace ditgen::llm {

using nlohmann::json;

// ---- family names -----------------------------------------------------------------------------

const char* family_name(DecoderFamily f) {
  switch (f) {
    case DecoderFamily::Mistral:
      return "mistral";
    case DecoderFamily::Qwen2:
      return "qwen2";
    case DecoderFamily::Gemma3:
      return "gemma3";
  }
  return "?";
}

std::optional<DecoderFamily> family_from_name(const std::string& name) {
  static const std::vector<std::pair<std::string, DecoderFamily>> names = {
      {"mistral", DecoderFamily::Mistral},   {"mistral3", DecoderFamily::Mistral},
      {"ministral", DecoderFamily::Mistral}, {"llama", DecoderFamily::Mistral},
      {"qwen2", DecoderFamily::Qwen2},       {"qwen25vl", DecoderFamily::Qwen2},
      {"qwen2_vl", DecoderFamily::Qwen2},    {"qwen2_vl_text", DecoderFamily::Qwen2},
      {"qwen2_5_vl", DecoderFamily::Qwen2},  {"qwen2_5_vl_text", DecoderFamily::Qwen2},
      {"gemma3", DecoderFamily::Gemma3},     {"gemma3_text", DecoderFamily::Gemma3},
  };
  for (const auto& [n, f] : names)
    if (n == name) return f;
  return std::nullopt;
}

// ---- config -----------------------------------------------------------------------------------

namespace {

// Key lookup in `text_config` first, then at the top level (wrapper configs of older generations keep
// the text keys at the top). Errors name the file and the key path.
class ConfigView {
 public:
  ConfigView(const json& j, std::string where) : where_(std::move(where)) {
    DITGEN_CHECK(j.is_object(), "{}: expected a JSON object", where_);
    top_ = &j;
    auto it = j.find("text_config");
    text_ = (it != j.end() && it->is_object()) ? &*it : nullptr;
  }

  // The value of `key` (nullptr when absent); `null_seen` tells whether it was present as null.
  const json* find(const std::string& key, bool* null_seen = nullptr) const {
    for (const json* o : {text_, top_}) {
      if (!o) continue;
      auto it = o->find(key);
      if (it == o->end()) continue;
      if (it->is_null()) {
        if (null_seen) *null_seen = true;
        return nullptr;
      }
      return &*it;
    }
    return nullptr;
  }
  bool present_as_null(const std::string& key) const {
    bool n = false;
    return !find(key, &n) && n;
  }
  std::string path(const std::string& key) const {
    if (text_ && text_->contains(key)) return "text_config." + key;
    return key;
  }

  template <typename T>
  std::optional<T> get(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    io::detail::check_kind<T>(*v, where_, path(key));
    try {
      return v->get<T>();
    } catch (const json::exception& e) {
      fail("{}: key '{}' has the wrong type ({})", where_, path(key), e.what());
    }
  }
  template <typename T>
  T get_or(const std::string& key, const T& fallback) const {
    auto v = get<T>(key);
    return v ? *v : fallback;
  }
  template <typename T>
  T require(const std::string& key) const {
    auto v = get<T>(key);
    DITGEN_CHECK(v.has_value(), "{}: required key '{}' is missing{}", where_, key,
                 text_ ? " (looked in text_config and at the top level)" : "");
    return *v;
  }
  const std::string& where() const { return where_; }

 private:
  const json* top_ = nullptr;
  const json* text_ = nullptr;
  std::string where_;
};

RopeParams parse_rope(const json& o, double default_theta, const std::string& where, const std::string& key) {
  DITGEN_CHECK(o.is_object(), "{}: '{}' must be an object", where, key);
  RopeParams p;
  std::string type = "default";
  try {
    if (o.contains("rope_type") && !o["rope_type"].is_null())
      type = o["rope_type"].get<std::string>();
    else if (o.contains("type") && !o["type"].is_null())
      type = o["type"].get<std::string>();
    p.theta = o.contains("rope_theta") && !o["rope_theta"].is_null() ? o["rope_theta"].get<double>()
                                                                     : default_theta;
    if (type == "linear") {
      DITGEN_CHECK(o.contains("factor") && o["factor"].is_number(),
                   "{}: '{}' has rope type linear but no factor", where, key);
      p.linear_factor = o["factor"].get<double>();
    } else {
      // Qwen2.5-VL's "mrope" is plain 1D RoPE for text-only input (all three position rows equal).
      DITGEN_CHECK(type == "default" || type == "mrope",
                   "{}: '{}' has rope type '{}', which is not supported (default, linear, mrope)", where, key,
                   type);
    }
  } catch (const json::exception& e) {
    fail("{}: '{}' has the wrong type ({})", where, key, e.what());
  }
  return p;
}

bool has_mrope(const json* o) {
  if (!o || !o->is_object()) return false;
  if (o->contains("mrope_section")) return true;
  auto it = o->find("full_attention");
  return it != o->end() && it->is_object() && it->contains("mrope_section");
}

Activation parse_activation(const std::string& name, const std::string& where, const std::string& key) {
  if (name == "silu" || name == "swish") return Activation::Silu;
  if (name == "gelu_pytorch_tanh" || name == "gelu_tanh" || name == "gelu_new") return Activation::GeluTanh;
  if (name == "gelu") return Activation::Gelu;
  fail("{}: '{}' = '{}' is not supported (silu, gelu_pytorch_tanh, gelu)", where, key, name);
}

}  // namespace

DecoderConfig DecoderConfig::from_json(const json& j, const std::string& where,
                                       std::optional<DecoderFamily> family) {
  ConfigView v(j, where);
  DecoderConfig c;

  // Family: model_type (text_config's first), else the caller's, else telling keys.
  std::optional<DecoderFamily> typed;
  // Both the wrapper's and text_config's model_type must name one family: a Qwen2.5-VL wrapper around a
  // Gemma text_config (or the reverse) is not a checkpoint of either.
  for (const json* o : {&j, j.contains("text_config") ? &j["text_config"] : nullptr}) {
    if (!o || !o->is_object() || !o->contains("model_type") || (*o)["model_type"].is_null()) continue;
    const std::string key = o == &j ? "model_type" : "text_config.model_type";
    DITGEN_CHECK((*o)["model_type"].is_string(), "{}: '{}' must be a string, got {}", where, key,
                 io::json_excerpt((*o)["model_type"]));
    const std::string mt = (*o)["model_type"].get<std::string>();
    const auto f = family_from_name(mt);
    DITGEN_CHECK(f.has_value(), "{}: {} '{}' is not a supported text encoder (mistral, qwen2, gemma3)", where, key,
                 io::printable(mt));
    DITGEN_CHECK(!typed || *typed == *f, "{}: model_type says {} but text_config.model_type says {}", where,
                 family_name(*typed), family_name(*f));
    typed = f;
  }
  if (typed && family && *typed != *family)
    fail("{}: model_type says {} but the caller expects a {} text encoder", where, family_name(*typed),
         family_name(*family));
  if (typed)
    c.family = *typed;
  else if (family)
    c.family = *family;
  else if (has_mrope(v.find("rope_scaling")) || has_mrope(v.find("rope_parameters")))
    c.family = DecoderFamily::Qwen2;
  else if (v.find("query_pre_attn_scalar"))
    c.family = DecoderFamily::Gemma3;
  else
    c.family = DecoderFamily::Mistral;
  const bool gemma = c.family == DecoderFamily::Gemma3;
  const bool qwen = c.family == DecoderFamily::Qwen2;

  c.hidden_size = v.require<int64_t>("hidden_size");
  c.intermediate_size = v.require<int64_t>("intermediate_size");
  c.num_hidden_layers = v.require<int>("num_hidden_layers");
  c.num_attention_heads = v.require<int64_t>("num_attention_heads");
  // Defaults below are those of the transformers config classes (Gemma 3's real text_config omits many).
  c.vocab_size = gemma ? v.get_or<int64_t>("vocab_size", 262208) : v.require<int64_t>("vocab_size");
  c.num_key_value_heads = v.get_or<int64_t>("num_key_value_heads", c.num_attention_heads);
  DITGEN_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_hidden_layers > 0 &&
                   c.num_attention_heads > 0 && c.num_key_value_heads > 0 && c.vocab_size > 0,
               "{}: sizes must be positive (hidden_size {}, intermediate_size {}, num_hidden_layers {}, "
               "num_attention_heads {}, num_key_value_heads {}, vocab_size {})",
               where, c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads,
               c.num_key_value_heads, c.vocab_size);
  DITGEN_CHECK(c.num_attention_heads % c.num_key_value_heads == 0,
               "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", where,
               c.num_attention_heads, c.num_key_value_heads);
  if (gemma) {
    c.head_dim = v.get_or<int64_t>("head_dim", 256);
  } else {
    DITGEN_CHECK(v.find("head_dim") || c.hidden_size % c.num_attention_heads == 0,
                 "{}: no head_dim and hidden_size {} is not a multiple of num_attention_heads {}", where,
                 c.hidden_size, c.num_attention_heads);
    c.head_dim = v.get_or<int64_t>("head_dim", c.hidden_size / c.num_attention_heads);
  }
  DITGEN_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0,
               "{}: head_dim {} must be positive and even (RoPE halves)", where, c.head_dim);
  c.rms_norm_eps = v.get_or<double>("rms_norm_eps", 1e-6);

  if (gemma) {
    const std::string key = v.find("hidden_activation") ? "hidden_activation" : "hidden_act";
    c.hidden_act = parse_activation(v.get_or<std::string>(key, "gelu_pytorch_tanh"), where, v.path(key));
  } else {
    c.hidden_act = parse_activation(v.get_or<std::string>("hidden_act", "silu"), where, v.path("hidden_act"));
  }

  // Biases: Qwen2 always has q/k/v biases; the others would also bias o_proj, which we do not declare.
  c.qkv_bias = qwen;
  if (!qwen)
    DITGEN_CHECK(!v.get_or<bool>("attention_bias", false), "{}: '{}' = true is not supported for {}", where,
                 v.path("attention_bias"), family_name(c.family));
  DITGEN_CHECK(!v.get_or<bool>("mlp_bias", false), "{}: '{}' = true is not supported", where,
               v.path("mlp_bias"));

  // RoPE: transformers 5 writes `rope_parameters` (flat, or keyed by layer type); older configs
  // `rope_theta` + `rope_scaling` (+ Gemma 3's `rope_local_base_freq`).
  // Qwen2.5-VL's text model defaults to 1e6 (its "mrope" is plain 1D RoPE for text-only input).
  const bool vl = qwen && (has_mrope(v.find("rope_scaling")) || has_mrope(v.find("rope_parameters")));
  const double default_theta = gemma || vl ? 1e6 : 1e4;
  if (const json* rp = v.find("rope_parameters")) {
    const std::string key = v.path("rope_parameters");
    if (rp->is_object() && (rp->contains("full_attention") || rp->contains("sliding_attention"))) {
      DITGEN_CHECK(rp->contains("full_attention"), "{}: '{}' has no 'full_attention' entry", where, key);
      c.rope_global = parse_rope((*rp)["full_attention"], default_theta, where, key + ".full_attention");
      c.rope_local = rp->contains("sliding_attention")
                         ? parse_rope((*rp)["sliding_attention"], 1e4, where, key + ".sliding_attention")
                         : c.rope_global;
    } else {
      c.rope_global = c.rope_local =
          parse_rope(*rp, v.get_or<double>("rope_theta", default_theta), where, key);
    }
  } else {
    const double theta = v.get_or<double>("rope_theta", default_theta);
    c.rope_global.theta = theta;
    if (const json* rs = v.find("rope_scaling"))
      c.rope_global = parse_rope(*rs, theta, where, v.path("rope_scaling"));
    c.rope_global.theta = theta;  // rope_scaling may repeat rope_theta; the top-level key wins
    c.rope_local = c.rope_global;
    if (gemma) c.rope_local = RopeParams{v.get_or<double>("rope_local_base_freq", 1e4), 1.0};
  }

  DITGEN_CHECK(c.rms_norm_eps > 0, "{}: '{}' must be positive, got {}", where, v.path("rms_norm_eps"), c.rms_norm_eps);
  DITGEN_CHECK(c.rope_global.theta > 0 && c.rope_local.theta > 0 && c.rope_global.linear_factor > 0,
               "{}: the RoPE base (rope_theta / rope_local_base_freq) and scaling factor must be positive", where);

  // Sliding-window layers.
  const int n = c.num_hidden_layers;
  c.layer_is_sliding.assign(n, false);
  int64_t window = 0;
  if (gemma) {
    window = v.get_or<int64_t>("sliding_window", 4096);
  } else if (qwen) {
    if (v.get_or<bool>("use_sliding_window", false)) window = v.get_or<int64_t>("sliding_window", 4096);
  } else {
    // MistralConfig defaults to a 4096 window; Mistral-Small 3 writes null (full attention).
    window = v.present_as_null("sliding_window") ? 0 : v.get_or<int64_t>("sliding_window", 4096);
  }
  if (const json* lt = v.find("layer_types")) {
    DITGEN_CHECK(lt->is_array() && static_cast<int>(lt->size()) == n,
                 "{}: '{}' must be a list of {} layer types (num_hidden_layers)", where,
                 v.path("layer_types"), n);
    for (int i = 0; i < n; ++i) {
      const json& t = (*lt)[i];
      DITGEN_CHECK(t.is_string() && (t == "sliding_attention" || t == "full_attention"),
                   "{}: '{}'[{}] must be \"sliding_attention\" or \"full_attention\"", where,
                   v.path("layer_types"), i);
      c.layer_is_sliding[i] = t == "sliding_attention";
    }
  } else if (gemma) {
    const int pattern = v.get_or<int>("sliding_window_pattern", 6);
    DITGEN_CHECK(pattern > 0, "{}: '{}' must be positive", where, v.path("sliding_window_pattern"));
    for (int i = 0; i < n; ++i) c.layer_is_sliding[i] = (i + 1) % pattern != 0;
  } else if (qwen) {
    const int first = v.get_or<int>("max_window_layers", 28);
    for (int i = 0; i < n; ++i) c.layer_is_sliding[i] = window > 0 && i >= first;
  } else {
    for (int i = 0; i < n; ++i) c.layer_is_sliding[i] = window > 0;
  }
  const bool any_sliding =
      std::any_of(c.layer_is_sliding.begin(), c.layer_is_sliding.end(), [](bool b) { return b; });
  if (any_sliding)
    DITGEN_CHECK(window > 0, "{}: '{}' must be a positive window for the sliding-attention layers", where,
                 v.path("sliding_window"));
  c.sliding_window = any_sliding ? window : 0;

  c.max_position_embeddings = v.get_or<int64_t>("max_position_embeddings", 0);
  DITGEN_CHECK(!v.find("max_position_embeddings") || c.max_position_embeddings > 0,
               "{}: '{}' must be a positive integer, got {}", where, v.path("max_position_embeddings"),
               c.max_position_embeddings);
  c.source = where;

  if (gemma) {
    c.scale_embeddings = c.offset_norms = c.sandwich_norms = c.qk_norm = true;
    c.query_pre_attn_scalar = v.get_or<double>("query_pre_attn_scalar", 256.0);
    DITGEN_CHECK(c.query_pre_attn_scalar > 0, "{}: '{}' must be positive", where,
                 v.path("query_pre_attn_scalar"));
    DITGEN_CHECK(!v.find("attn_logit_softcapping"),
                 "{}: '{}' (attention logit soft-capping) is not supported", where,
                 v.path("attn_logit_softcapping"));
    DITGEN_CHECK(!v.get_or<bool>("use_bidirectional_attention", false),
                 "{}: '{}' = true is not supported (causal text encoders only)", where,
                 v.path("use_bidirectional_attention"));
  }
  return c;
}

double DecoderConfig::attention_scale() const {
  const double s = query_pre_attn_scalar > 0 ? query_pre_attn_scalar : static_cast<double>(head_dim);
  return 1.0 / std::sqrt(s);
}

// ---- checkpoint prefixes ----------------------------------------------------------------------

std::string detect_decoder_root(const io::TensorStore& store) {
  // The one place where checkpoint generations are told apart (DESIGN §5).
  static const std::vector<std::string> roots = {"", "model.", "language_model.model.",
                                                 "model.language_model."};
  std::vector<std::string> found;
  for (const auto& r : roots)
    if (store.has(r + "embed_tokens.weight")) found.push_back(r);
  auto list = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& r : v) s += (s.empty() ? "'" : ", '") + r + "embed_tokens.weight'";
    return s;
  };
  DITGEN_CHECK(!found.empty(), "'{}' does not look like a decoder text encoder: none of {} is in it",
               store.location(), list(roots));
  DITGEN_CHECK(found.size() == 1, "'{}' holds several decoder embeddings ({}); cannot tell which to load",
               store.location(), list(found));
  return found[0];
}

std::vector<std::string> decoder_ignore_prefixes(const std::string& root, const DecoderConfig& cfg,
                                                 int num_layers_loaded) {
  // Vision towers, projectors and LM heads of every wrapper generation (Mistral3 / Gemma3 legacy and
  // new, Qwen2.5-VL legacy and new), plus rotary buffers some old checkpoints saved.
  std::vector<std::string> out = {"lm_head.",
                                  "language_model.lm_head.",
                                  "model.lm_head.",
                                  "vision_tower.",
                                  "model.vision_tower.",
                                  "multi_modal_projector.",
                                  "model.multi_modal_projector.",
                                  "visual.",
                                  "model.visual.",
                                  ".rotary_emb.inv_freq"};
  for (int i = std::max(num_layers_loaded, 0); i < cfg.num_hidden_layers; ++i)
    out.push_back(root + "layers." + std::to_string(i) + ".");
  if (num_layers_loaded >= 0 && num_layers_loaded < cfg.num_hidden_layers) out.push_back(root + "norm.");
  return out;
}

std::shared_ptr<nn::CheckpointSource> open_decoder_source(std::shared_ptr<io::TensorStore> store,
                                                          const DecoderConfig& cfg, int num_layers_loaded) {
  const std::string root = detect_decoder_root(*store);
  auto ignore = decoder_ignore_prefixes(root, cfg, num_layers_loaded);
  return std::make_shared<nn::CheckpointSource>(std::move(store), root, std::move(ignore));
}

// ---- TE-P ---------------------------------------------------------------------------------------

namespace {

// [offset, offset + size) of part `r` of `n` split in `parts` (comm::split_sizes).
std::pair<int64_t, int64_t> part_of(int64_t n, int parts, int r) {
  const auto sizes = comm::split_sizes(n, parts);
  int64_t offset = 0;
  for (int i = 0; i < r; ++i) offset += sizes[i];
  return {offset, sizes[r]};
}

// "11+11+10" for up to 8 parts, else "4 or 3".
std::string shares(int64_t n, int parts) {
  const auto sizes = comm::split_sizes(n, parts);
  if (parts <= 8) {
    std::string s;
    for (auto v : sizes) s += (s.empty() ? "" : "+") + std::to_string(v);
    return s;
  }
  return sizes.front() == sizes.back() ? fmt::format("{} each", sizes.front())
                                       : fmt::format("{} or {}", sizes.front(), sizes.back());
}

}  // namespace

TpSlices tp_slices(const DecoderConfig& c, const nn::TpGroup& tp) {
  TpSlices t;
  std::tie(t.head0, t.heads) = part_of(c.num_attention_heads, tp.size, tp.rank);
  if (t.heads > 0) {
    const int64_t group = c.num_attention_heads / c.num_key_value_heads;  // query heads per KV head
    t.kv0 = t.head0 / group;
    t.kv_heads = (t.head0 + t.heads - 1) / group + 1 - t.kv0;
  }
  std::tie(t.ff0, t.ff) = part_of(c.intermediate_size, tp.size, tp.rank);
  std::tie(t.vocab0, t.vocab) = part_of(c.vocab_size, tp.size, tp.rank);
  return t;
}

std::string describe_tp(const DecoderConfig& c, int ranks) {
  int64_t kv_held = 0;
  int idle = 0;
  std::string kv_shares;
  for (int r = 0; r < ranks; ++r) {
    const TpSlices t = tp_slices(c, {r, ranks});
    kv_held += t.kv_heads;
    idle += t.heads == 0 ? 1 : 0;
    if (ranks <= 8) kv_shares += (kv_shares.empty() ? "" : "+") + std::to_string(t.kv_heads);
  }
  std::string s = fmt::format(
      "TE-P: the {} text encoder is tensor-parallel over {} ranks: {} query heads as {}, {} KV heads held as {}{}, "
      "MLP {} as {}, vocabulary {} as {} (embedding rows sharded)",
      family_name(c.family), ranks, c.num_attention_heads, shares(c.num_attention_heads, ranks),
      c.num_key_value_heads, ranks <= 8 ? kv_shares : fmt::format("{} copies", kv_held),
      kv_held > c.num_key_value_heads
          ? fmt::format(" ({} replicated: a rank holds every KV head its query heads read)", kv_held - c.num_key_value_heads)
          : "",
      c.intermediate_size, shares(c.intermediate_size, ranks), c.vocab_size, shares(c.vocab_size, ranks));
  if (c.num_attention_heads % ranks != 0) s += "; uneven head split (the ranks do not divide the heads)";
  if (idle > 0) s += fmt::format("; {} rank(s) hold no attention head (more ranks than heads)", idle);
  return s;
}

// ---- model ------------------------------------------------------------------------------------

DecoderLM::DecoderLM(DecoderConfig cfg, const nn::Weights& wb, int num_layers_needed, AllReduce tp_all_reduce,
                     std::shared_ptr<nn::BlockStreamer> offload)
    : cfg_(std::move(cfg)),
      dtype_(wb.dtype()),
      device_(wb.device()),
      tp_size_(wb.tp().size),
      all_reduce_(std::move(tp_all_reduce)),
      layers_(std::move(offload)) {
  const DecoderConfig& c = cfg_;
  const int n = num_layers_needed < 0 ? c.num_hidden_layers : num_layers_needed;
  DITGEN_CHECK(n <= c.num_hidden_layers, "text encoder: {} layers requested but the config has {}", n,
               c.num_hidden_layers);
  DITGEN_CHECK(static_cast<int>(c.layer_is_sliding.size()) == c.num_hidden_layers,
               "internal: text encoder config has {} layer types for {} layers", c.layer_is_sliding.size(),
               c.num_hidden_layers);
  const bool tp = tp_size_ > 1;
  DITGEN_CHECK(!tp || all_reduce_ != nullptr, "internal: text encoder built for {} TE-P ranks but no all-reduce",
               tp_size_);
  slices_ = tp_slices(c, wb.tp());
  const TpSlices& t = slices_;
  if (t.heads > 0) {
    // Local query head j reads global KV head (head0 + j) / group. When that is j / (heads / kv_heads), the
    // grouped layout nn::attention expands itself; otherwise (a query group cut by a rank boundary) the
    // local K/V heads are gathered per query head.
    const int64_t group = c.num_attention_heads / c.num_key_value_heads;
    std::vector<int64_t> index;
    bool grouped = t.heads % t.kv_heads == 0;
    for (int64_t j = 0; j < t.heads; ++j) {
      index.push_back((t.head0 + j) / group - t.kv0);
      grouped = grouped && index.back() == j / (t.heads / t.kv_heads);
    }
    if (!grouped) kv_index_ = at::tensor(index, at::kLong).to(device_);
  }

  using nn::Init;
  using nn::Shard;
  const int64_t hd = c.hidden_size, dh = c.head_dim, ff = c.intermediate_size;
  const int64_t q_out = c.num_attention_heads * dh, kv_out = c.num_key_value_heads * dh;
  // This rank's piece of a dim (the whole dim on one rank).
  auto piece = [&](int dim, int64_t start, int64_t len) { return tp ? Shard::piece(dim, start, len) : Shard::replicated(); };
  const Shard q_rows = piece(0, t.head0 * dh, t.heads * dh), kv_rows = piece(0, t.kv0 * dh, t.kv_heads * dh);
  const Shard o_cols = piece(1, t.head0 * dh, t.heads * dh);
  const Shard ff_rows = piece(0, t.ff0, t.ff), ff_cols = piece(1, t.ff0, t.ff);
  // (1 + w) norms store w centred at 0.
  const Init norm_init = c.offset_norms ? Init::Mean : Init::Norm;

  embed_ = wb.get("embed_tokens.weight", {c.vocab_size, hd}, piece(0, t.vocab0, t.vocab), Init::Embedding);
  layers_.reserve(n);
  for (int i = 0; i < n; ++i) {
    const nn::Weights lw = wb.pp("layers").pp(i);
    const nn::Weights aw = lw.pp("self_attn"), mw = lw.pp("mlp");
    Layer l;
    l.input_norm = lw.get("input_layernorm.weight", {hd}, Shard::replicated(), norm_init);
    l.post_attn_norm = lw.get("post_attention_layernorm.weight", {hd}, Shard::replicated(), norm_init);
    if (c.sandwich_norms) {
      l.pre_ff_norm = lw.get("pre_feedforward_layernorm.weight", {hd}, Shard::replicated(), norm_init);
      l.post_ff_norm = lw.get("post_feedforward_layernorm.weight", {hd}, Shard::replicated(), norm_init);
    }
    l.q = aw.get("q_proj.weight", {q_out, hd}, q_rows);
    l.k = aw.get("k_proj.weight", {kv_out, hd}, kv_rows);
    l.v = aw.get("v_proj.weight", {kv_out, hd}, kv_rows);
    l.o = aw.get("o_proj.weight", {hd, q_out}, o_cols);
    if (c.qkv_bias) {
      l.q_bias = aw.get("q_proj.bias", {q_out}, q_rows, Init::Bias);
      l.k_bias = aw.get("k_proj.bias", {kv_out}, kv_rows, Init::Bias);
      l.v_bias = aw.get("v_proj.bias", {kv_out}, kv_rows, Init::Bias);
    }
    if (c.qk_norm) {
      l.q_norm = aw.get("q_norm.weight", {dh}, Shard::replicated(), norm_init);
      l.k_norm = aw.get("k_norm.weight", {dh}, Shard::replicated(), norm_init);
    }
    l.gate = mw.get("gate_proj.weight", {ff, hd}, ff_rows);
    l.up = mw.get("up_proj.weight", {ff, hd}, ff_rows);
    l.down = mw.get("down_proj.weight", {hd, ff}, ff_cols);
    layers_.push_back(std::move(l));
  }
  if (n == c.num_hidden_layers) final_norm_ = wb.get("norm.weight", {hd}, Shard::replicated(), norm_init);
}

at::Tensor DecoderLM::norm(const at::Tensor& x, const at::Tensor& w) const {
  if (!cfg_.offset_norms) return nn::rms_norm_cast_first(x, w, cfg_.rms_norm_eps);
  // Gemma: x * rsqrt(mean(x^2) + eps) * (1 + w), all in fp32, then cast back.
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor r = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true).add_(cfg_.rms_norm_eps));
  return (xf * r * (w.to(at::kFloat) + 1.0)).to(x.scalar_type());
}

void DecoderLM::reduce(at::Tensor& t) const {
  if (tp_size_ > 1) all_reduce_(t);
}

at::Tensor DecoderLM::embed(const at::Tensor& ids) const {
  if (tp_size_ == 1) return at::embedding(embed_, ids);
  // Vocabulary-sharded: the rows this rank holds, zeros for the others, summed over the ranks.
  at::Tensor local = ids - slices_.vocab0;
  at::Tensor mine = local.ge(0).logical_and(local.lt(slices_.vocab));  // [B, L]
  at::Tensor x;
  if (slices_.vocab > 0)
    x = at::embedding(embed_, local.clamp(0, slices_.vocab - 1)).masked_fill_(mine.logical_not().unsqueeze(-1), 0);
  else
    x = at::zeros({ids.size(0), ids.size(1), cfg_.hidden_size}, embed_.options());
  reduce(x);
  return x;
}

namespace {

// cos/sin of cat(angles, angles) for rotate_half RoPE, built like HF: inv_freq in fp32, one fp32 multiply
// per angle, cast to the activation dtype. positions [B, L] int64 -> [B, L, D].
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& positions, int64_t dim, const RopeParams& p,
                                              at::ScalarType dtype) {
  auto fopt = at::TensorOptions().dtype(at::kFloat).device(positions.device());
  at::Tensor exponent =
      at::arange(0, dim, 2, fopt.dtype(at::kLong)).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq = at::pow(p.theta, exponent).reciprocal();  // [D/2]
  if (p.linear_factor != 1.0) inv_freq = inv_freq / p.linear_factor;
  at::Tensor angles = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, L, D/2]
  at::Tensor emb = at::cat({angles, angles}, -1);                         // [B, L, D]
  return {emb.cos().to(dtype), emb.sin().to(dtype)};
}

at::Tensor activation(const at::Tensor& x, Activation a) {
  switch (a) {
    case Activation::Silu:
      return at::silu(x);
    case Activation::GeluTanh:
      return at::gelu(x, "tanh");
    case Activation::Gelu:
      return at::gelu(x);
  }
  return x;
}

}  // namespace

at::Tensor DecoderLM::layer_forward(const Layer& l, const at::Tensor& x, const at::Tensor& mask,
                                    const at::Tensor& cos, const at::Tensor& sin) const {
  const int64_t b = x.size(0), s = x.size(1), dh = cfg_.head_dim;
  const int64_t heads = slices_.heads, kv_heads = slices_.kv_heads;  // this rank's (all on one rank)
  at::Tensor a;
  if (heads > 0) {
    at::Tensor h = norm(x, l.input_norm);                                     // [B, L, hidden]
    at::Tensor q = nn::linear(h, l.q, l.q_bias).view({b, s, heads, dh});      // [B, L, H_loc, D]
    at::Tensor k = nn::linear(h, l.k, l.k_bias).view({b, s, kv_heads, dh});   // [B, L, KV_loc, D]
    at::Tensor v = nn::linear(h, l.v, l.v_bias).view({b, s, kv_heads, dh});
    if (cfg_.qk_norm) {
      q = norm(q, l.q_norm);
      k = norm(k, l.k_norm);
    }
    q = nn::rope_half(q, cos, sin);
    k = nn::rope_half(k, cos, sin);
    if (kv_index_.defined()) {  // TE-P: a query group cut by a rank boundary; one K/V head per query head
      k = k.index_select(2, kv_index_);  // [B, L, H_loc, D]
      v = v.index_select(2, kv_index_);
    }
    // nn::attention scales by 1/sqrt(D); Gemma's query_pre_attn_scalar may ask for another scale.
    const double extra = cfg_.attention_scale() * std::sqrt(static_cast<double>(dh));
    if (std::abs(extra - 1.0) > 1e-12) q = q * extra;
    // Rows that see no key (left padding) get exactly 0 here but still go through residual and MLP.
    a = nn::attention(q, k, v, mask);                  // [B, L, H_loc, D]
    a = nn::linear(a.reshape({b, s, heads * dh}), l.o);  // [B, L, hidden] partial
  } else {
    a = at::zeros_like(x);  // TE-P rank without heads: adds nothing to the sum
  }
  reduce(a);
  if (cfg_.sandwich_norms) a = norm(a, l.post_attn_norm);
  at::Tensor hs = x + a;

  at::Tensor f;
  if (slices_.ff > 0) {
    at::Tensor m = norm(hs, cfg_.sandwich_norms ? l.pre_ff_norm : l.post_attn_norm);
    f = nn::linear(activation(nn::linear(m, l.gate), cfg_.hidden_act) * nn::linear(m, l.up), l.down);
  } else {
    f = at::zeros_like(hs);
  }
  reduce(f);
  if (cfg_.sandwich_norms) f = norm(f, l.post_ff_norm);
  return hs + f;
}

std::vector<at::Tensor> DecoderLM::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                           const std::vector<int>& wanted) const {
  const DecoderConfig& c = cfg_;
  const int total = c.num_hidden_layers;
  DITGEN_CHECK(input_ids.defined() && input_ids.dim() == 2, "text encoder: input_ids must be [B, L]");
  const int64_t b = input_ids.size(0), s = input_ids.size(1);
  DITGEN_CHECK(c.max_position_embeddings == 0 || s <= c.max_position_embeddings,
               "text encoder ({}): the prompt has {} tokens but max_position_embeddings is {}; lower "
               "--max-sequence-length or fix the config",
               io::printable(c.source), s, c.max_position_embeddings);

  // Resolve the wanted indices (negative counts from the end, like Python).
  std::vector<int> idx;
  int deepest = 0;
  for (int k : wanted) {
    const int r = k < 0 ? k + total + 1 : k;
    DITGEN_CHECK(r >= 0 && r <= total, "text encoder: hidden state {} does not exist (0..{})", k, total);
    DITGEN_CHECK(r <= num_layers_loaded() && (r < total || final_norm_),
                 "text encoder: hidden state {} needs layers that were not loaded ({} of {} loaded)", k,
                 num_layers_loaded(), total);
    idx.push_back(r);
    deepest = std::max(deepest, r);
  }
  std::set<int> keep(idx.begin(), idx.end());

  at::Tensor ids = input_ids.to(device_, at::kLong);  // [B, L]
  at::Tensor valid;                                   // [B, L] bool
  if (attention_mask.defined()) {
    DITGEN_CHECK(attention_mask.sizes() == input_ids.sizes(),
                 "text encoder: attention_mask {} does not match input_ids {}",
                 io::shape_str(attention_mask.sizes()), io::shape_str(input_ids.sizes()));
    valid = attention_mask.to(device_).ne(0);
  } else {
    valid = at::ones({b, s}, at::TensorOptions().dtype(at::kBool).device(device_));
  }

  std::vector<at::Tensor> states(total + 1);
  if (tp_size_ > 1 && ids.numel() > 0) {
    // Out-of-range ids would silently embed as zeros under a sharded vocabulary: refuse them as one rank does.
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    DITGEN_CHECK(lo >= 0 && hi < c.vocab_size, "text encoder: token ids [{}, {}] outside the vocabulary of {}", lo, hi,
                 c.vocab_size);
  }
  at::Tensor x = embed(ids);  // [B, L, hidden]
  if (c.scale_embeddings) {
    // Gemma: the sqrt(hidden) scale is rounded to the weight dtype first (bf16: exactly 62.0 for 3840).
    at::Tensor scale = at::scalar_tensor(std::sqrt(static_cast<double>(c.hidden_size)),
                                         at::TensorOptions().dtype(at::kFloat))
                           .to(embed_.scalar_type());
    x = x * scale.to(device_);
  }
  if (keep.count(0)) states[0] = x;
  if (deepest > 0) {
    // Positions 0..L-1 regardless of padding, for all three families. (Qwen2.5-VL text-only: the fixture,
    // transformers 5.17, uses these too, not cumsum(mask) - 1 as older get_rope_index did; RoPE is
    // relative, so real tokens agree either way and only right-pad rows tell them apart.)
    auto lopt = at::TensorOptions().dtype(at::kLong).device(device_);
    at::Tensor pos = at::arange(s, lopt).unsqueeze(0).expand({b, s});
    auto [cos_g, sin_g] = rope_tables(pos, c.head_dim, c.rope_global, dtype_);  // [B, L, D]
    at::Tensor cos_l = cos_g, sin_l = sin_g;
    if (c.sliding_window > 0) std::tie(cos_l, sin_l) = rope_tables(pos, c.head_dim, c.rope_local, dtype_);

    // Key j is visible to query i iff j <= i and j is a real token; sliding layers also need i - j < window.
    at::Tensor qi = at::arange(s, lopt).unsqueeze(1), kj = at::arange(s, lopt).unsqueeze(0);
    at::Tensor causal = kj.le(qi);                                              // [L, L]
    at::Tensor keys = valid.unsqueeze(1).unsqueeze(1);                          // [B, 1, 1, L]
    at::Tensor full_mask = causal.unsqueeze(0).unsqueeze(0).logical_and(keys);  // [B, 1, L, L]
    at::Tensor sliding_mask;
    if (c.sliding_window > 0) sliding_mask = full_mask.logical_and((qi - kj).lt(c.sliding_window));

    for (int i = 0; i < deepest; ++i) {
      const bool sl = c.layer_is_sliding[i];
      x = layer_forward(layers_[i], x, sl ? sliding_mask : full_mask, sl ? cos_l : cos_g, sl ? sin_l : sin_g);
      if (!keep.count(i + 1)) continue;
      states[i + 1] = (i + 1 == total) ? norm(x, *final_norm_) : x;
    }
  }
  std::vector<at::Tensor> out;
  out.reserve(idx.size());
  for (int r : idx) out.push_back(states[r]);
  return out;
}

std::unique_ptr<DecoderLM> load_decoder(const DecoderConfig& cfg, const nn::Weights& wb, int num_layers_needed,
                                        const std::shared_ptr<parallel::Context>& ctx, bool parallel_text,
                                        std::shared_ptr<nn::BlockStreamer> offload) {
  if (!parallel_text || !ctx || ctx->text_tp().size() == 1)
    return std::make_unique<DecoderLM>(cfg, wb, num_layers_needed, nullptr, std::move(offload));
  spdlog::info("{}", describe_tp(cfg, ctx->text_tp().size()));
  std::shared_ptr<parallel::Context> group = ctx;
  return std::make_unique<DecoderLM>(cfg, wb.with_tp(ctx->text_tp_group()), num_layers_needed,
                                     [group](at::Tensor& t) { group->text_tp().all_reduce(t, comm::ReduceOp::Sum); },
                                     std::move(offload));
}

}  // namespace ditgen::llm
