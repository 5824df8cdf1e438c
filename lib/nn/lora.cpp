#include "lib/nn/lora.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <regex>

#include "lib/io/json.h"
#include "lib/io/printable.h"
#include "lib/nn/names.h"
#include "lib/runtime/error.h"

namespace ditgen::nn {

namespace {

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size()))
    s.replace(pos, from.size(), to);
  return s;
}

// Empty when `value` is a good FILE[:SCALE] (then stored in `out`); else why not, without the flag's name.
std::string flag_error(const std::string& value, LoraFile* out) {
  LoraFile f{value, 1.0};
  const size_t colon = value.rfind(':');
  if (colon != std::string::npos && !io::file_exists(value)) {  // a file whose name has a ':' is that file
    const std::string tail = value.substr(colon + 1);
    char* end = nullptr;
    const double v = std::strtod(tail.c_str(), &end);
    if (tail.empty() || end != tail.c_str() + tail.size())
      return fmt::format("'{}': SCALE '{}' is not a number (FILE[:SCALE], e.g. style.safetensors:0.8)", value, tail);
    if (!std::isfinite(v)) return fmt::format("'{}': SCALE '{}' is not a finite number", value, tail);
    f.path = value.substr(0, colon);
    f.scale = v;
  }
  if (f.path.empty()) return fmt::format("'{}': FILE is empty (FILE[:SCALE])", value);
  if (!io::file_exists(f.path)) return fmt::format("'{}': no such file '{}'", value, f.path);
  if (out) *out = f;
  return "";
}

// ---- key layouts ---------------------------------------------------------------------------------

// Where one LoRA module of a file goes: a module of the model (diffusers name) in a component, and
// which rows of B it takes (`parts` equal parts, part `index`: BFL's fused qkv split into q, k, v; or
// B's two halves swapped: BFL's final (shift, scale) modulation as diffusers' (scale, shift)).
struct Target {
  std::string component;
  std::string module;
  int parts = 1, index = 0;
  bool swap_halves = false;
};

std::vector<Target> one(const std::string& component, const std::string& module) { return {{component, module}}; }

std::vector<Target> split3(const std::string& prefix, const char* const (&names)[3]) {
  std::vector<Target> t;
  for (int i = 0; i < 3; ++i) t.push_back({"transformer", prefix + names[i], 3, i, false});
  return t;
}

const char* const kImgQkv[3] = {"to_q", "to_k", "to_v"};
const char* const kTxtQkv[3] = {"add_q_proj", "add_k_proj", "add_v_proj"};

// FLUX.2 (lora_pipeline.py Flux2LoraLoaderMixin.lora_state_dict): kohya names with `lora_unet_`,
// BFL / ai-toolkit names under `diffusion_model.` (PEFT's `base_model.model.` is read as that), else
// diffusers names under `transformer.`.
std::vector<Target> flux2_target(const std::string& name) {
  static const std::regex kohya_double(R"(double_blocks_(\d+)_(img|txt)_(attn_qkv|attn_proj|mlp_0|mlp_2))");
  static const std::regex kohya_single(R"(single_blocks_(\d+)_linear([12]))");
  static const std::regex bfl_double(R"(double_blocks\.(\d+)\.(img|txt)_(attn\.qkv|attn\.proj|mlp\.0|mlp\.2))");
  static const std::regex bfl_single(R"(single_blocks\.(\d+)\.linear([12]))");
  auto double_block = [](const std::string& i, const std::string& stream, const std::string& what) {
    const std::string p = "transformer_blocks." + i + ".";
    const bool img = stream == "img";
    if (what == "attn_qkv" || what == "attn.qkv") return split3(p + "attn.", img ? kImgQkv : kTxtQkv);
    if (what == "attn_proj" || what == "attn.proj") return one("transformer", p + (img ? "attn.to_out.0" : "attn.to_add_out"));
    const bool in = what == "mlp_0" || what == "mlp.0";
    return one("transformer", p + (img ? "ff." : "ff_context.") + (in ? "linear_in" : "linear_out"));
  };
  auto single_block = [](const std::string& i, const std::string& which) {
    return one("transformer", "single_transformer_blocks." + i + (which == "1" ? ".attn.to_qkv_mlp_proj" : ".attn.to_out"));
  };
  std::smatch m;
  if (starts_with(name, "transformer.")) return one("transformer", name.substr(12));
  if (starts_with(name, "lora_unet_")) {
    const std::string k = name.substr(10);
    if (std::regex_match(k, m, kohya_double)) return double_block(m[1], m[2], m[3]);
    if (std::regex_match(k, m, kohya_single)) return single_block(m[1], m[2]);
    static const std::map<std::string, std::string> extra = {
        {"img_in", "x_embedder"},
        {"txt_in", "context_embedder"},
        {"time_in_in_layer", "time_guidance_embed.timestep_embedder.linear_1"},
        {"time_in_out_layer", "time_guidance_embed.timestep_embedder.linear_2"},
        {"final_layer_linear", "proj_out"}};
    if (auto it = extra.find(k); it != extra.end()) return one("transformer", it->second);
    return {};
  }
  std::string k;
  if (starts_with(name, "diffusion_model.")) k = name.substr(16);
  else if (starts_with(name, "base_model.model.")) k = name.substr(17);
  else return {};
  // Some exports keep diffusers block names under the prefix (and a few the truncated `sformer_blocks`).
  if (starts_with(k, "single_transformer_blocks.") || starts_with(k, "transformer_blocks.")) return one("transformer", k);
  if (starts_with(k, "sformer_blocks.")) return one("transformer", "tran" + k);
  if (std::regex_match(k, m, bfl_double)) return double_block(m[1], m[2], m[3]);
  if (std::regex_match(k, m, bfl_single)) return single_block(m[1], m[2]);
  static const std::map<std::string, std::string> extra = {
      {"img_in", "x_embedder"},
      {"txt_in", "context_embedder"},
      {"time_in.in_layer", "time_guidance_embed.timestep_embedder.linear_1"},
      {"time_in.out_layer", "time_guidance_embed.timestep_embedder.linear_2"},
      {"guidance_in.in_layer", "time_guidance_embed.guidance_embedder.linear_1"},
      {"guidance_in.out_layer", "time_guidance_embed.guidance_embedder.linear_2"},
      {"final_layer.linear", "proj_out"},
      {"single_stream_modulation.lin", "single_stream_modulation.linear"},
      {"double_stream_modulation_img.lin", "double_stream_modulation_img.linear"},
      {"double_stream_modulation_txt.lin", "double_stream_modulation_txt.linear"}};
  if (auto it = extra.find(k); it != extra.end()) return one("transformer", it->second);
  if (k == "final_layer.adaLN_modulation.1") return {{"transformer", "norm_out.linear", 1, 0, true}};
  return {};
}

// Qwen-Image (_convert_non_diffusers_qwen_lora_to_diffusers): `diffusion_model.` holds diffusers names;
// kohya's `lora_unet_` names are diffusers names with '_' for '.', restored by a table of top-level
// modules and, inside `transformer_blocks_`, by n-grams that keep their underscores.
std::vector<Target> qwen_target(const std::string& name) {
  if (starts_with(name, "transformer.")) return one("transformer", name.substr(12));
  if (starts_with(name, "diffusion_model.")) return one("transformer", name.substr(16));
  if (!starts_with(name, "lora_unet_")) return {};
  const std::string k = name.substr(10);
  static const std::map<std::string, std::string> top = {
      {"img_in", "img_in"},
      {"txt_in", "txt_in"},
      {"proj_out", "proj_out"},
      {"norm_out_linear", "norm_out.linear"},
      {"time_text_embed_timestep_embedder_linear_1", "time_text_embed.timestep_embedder.linear_1"},
      {"time_text_embed_timestep_embedder_linear_2", "time_text_embed.timestep_embedder.linear_2"}};
  if (auto it = top.find(k); it != top.end()) return one("transformer", it->second);
  const std::string prefix = "transformer_blocks_";
  if (!starts_with(k, prefix)) return {};
  static const std::vector<std::vector<std::string>> protected_ngrams = {
      // longest first, as upstream tries them
      {"add", "q", "proj"}, {"add", "k", "proj"}, {"add", "v", "proj"}, {"to", "add", "out"},
      {"to", "q"},          {"to", "k"},          {"to", "v"},          {"to", "out"},
      {"add", "q"},         {"add", "k"},         {"add", "v"},         {"txt", "mlp"},
      {"img", "mlp"},       {"txt", "mod"},       {"img", "mod"}};
  std::vector<std::string> parts;
  for (size_t start = prefix.size();;) {
    const size_t us = k.find('_', start);
    parts.push_back(k.substr(start, us == std::string::npos ? std::string::npos : us - start));
    if (us == std::string::npos) break;
    start = us + 1;
  }
  std::string module = "transformer_blocks";
  for (size_t i = 0; i < parts.size();) {
    size_t take = 1;
    for (const auto& ng : protected_ngrams) {
      if (i + ng.size() > parts.size()) continue;
      if (std::equal(ng.begin(), ng.end(), parts.begin() + static_cast<std::ptrdiff_t>(i))) {
        take = ng.size();
        break;
      }
    }
    std::string piece = parts[i];
    for (size_t j = 1; j < take; ++j) piece += "_" + parts[i + j];
    module += "." + piece;
    i += take;
  }
  return one("transformer", module);
}

// LTX-2 (_convert_non_diffusers_ltx2_lora_to_diffusers): the original checkpoint's names under
// `diffusion_model.` (renamed as diffusers' conversion renames them) and the text connectors' under
// `text_embedding_projection.`; diffusers names under `transformer.` and `connectors.`.
std::vector<Target> ltx2_target(const std::string& name) {
  if (starts_with(name, "transformer.")) return one("transformer", name.substr(12));
  if (starts_with(name, "connectors.")) return one("connectors", name.substr(11));
  if (starts_with(name, "text_embedding_projection."))
    return one("connectors", replace_all(name.substr(26), "aggregate_embed", "text_proj_in"));
  if (!starts_with(name, "diffusion_model.")) return {};
  std::string k = name.substr(16);
  // Substring replacements in upstream's order.
  static const std::pair<const char*, const char*> renames[] = {
      {"patchify_proj", "proj_in"},
      {"audio_patchify_proj", "audio_proj_in"},
      {"av_ca_video_scale_shift_adaln_single", "av_cross_attn_video_scale_shift"},
      {"av_ca_a2v_gate_adaln_single", "av_cross_attn_video_a2v_gate"},
      {"av_ca_audio_scale_shift_adaln_single", "av_cross_attn_audio_scale_shift"},
      {"av_ca_v2a_gate_adaln_single", "av_cross_attn_audio_v2a_gate"},
      {"scale_shift_table_a2v_ca_video", "video_a2v_cross_attn_scale_shift_table"},
      {"scale_shift_table_a2v_ca_audio", "audio_a2v_cross_attn_scale_shift_table"},
      {"q_norm", "norm_q"},
      {"k_norm", "norm_k"},
      {"audio_prompt_adaln_single", "audio_prompt_adaln"},
      {"prompt_adaln_single", "prompt_adaln"}};
  for (const auto& [from, to] : renames) k = replace_all(k, from, to);
  if (starts_with(k, "adaln_single.")) k = "time_embed." + k.substr(13);
  else if (starts_with(k, "audio_adaln_single.")) k = "audio_time_embed." + k.substr(19);
  return one("transformer", k);
}

std::vector<Target> target_of(LoraModel model, const std::string& name) {
  switch (model) {
    case LoraModel::Flux2: return flux2_target(name);
    case LoraModel::QwenImage: return qwen_target(name);
    case LoraModel::Ltx2: return ltx2_target(name);
  }
  return {};
}

const char* prefixes_of(LoraModel model) {
  switch (model) {
    case LoraModel::Flux2: return "transformer., lora_unet_ (kohya, BFL names), diffusion_model. (BFL names)";
    case LoraModel::QwenImage: return "transformer., diffusion_model., lora_unet_transformer_blocks_";
    case LoraModel::Ltx2: return "transformer., connectors., diffusion_model., text_embedding_projection.";
  }
  return "";
}

// ---- one file ------------------------------------------------------------------------------------

struct Module {
  std::string a, b, alpha;  // keys in the file
};

// The tensor suffixes of one LoRA module, and which part each is.
struct Suffix {
  const char* text;
  char part;  // 'a', 'b' or 'l' (alpha)
};
constexpr Suffix kSuffixes[] = {{".lora_A.weight", 'a'},         {".lora_B.weight", 'b'},
                                {".lora_A.default.weight", 'a'}, {".lora_B.default.weight", 'b'},
                                {".lora_down.weight", 'a'},      {".lora_up.weight", 'b'},
                                {".alpha", 'l'}};

// PEFT's LoraConfig as diffusers stores it in the file's metadata (`lora_adapter_metadata`): the
// alpha / r of one module, or 0 when the file has no such metadata.
class AdapterConfig {
 public:
  AdapterConfig(const io::SafetensorsFile& f, const std::string& where) {
    auto it = f.metadata().find("lora_adapter_metadata");
    if (it == f.metadata().end()) return;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(it->second);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: its lora_adapter_metadata is not valid JSON ({})", where, e.what());
    }
    DITGEN_CHECK(j.is_object(), "{}: its lora_adapter_metadata is not a JSON object", where);
    // A pipeline's save prefixes the config with the component ("transformer.r"); a model's does not.
    for (const auto& [k, v] : j.items()) {
      const size_t dot = k.find('.');
      if (dot != std::string::npos && k.find('.', dot + 1) == std::string::npos)
        by_component_[k.substr(0, dot)][k.substr(dot + 1)] = v;
      else
        by_component_[""][k] = v;
    }
    where_ = where;
    present_ = true;
  }

  // alpha / r (or alpha / sqrt(r) with rsLoRA) for `module` of `component` whose A has `rank` rows.
  std::optional<double> scale(const std::string& component, const std::string& module, int64_t rank) const {
    if (!present_) return std::nullopt;
    auto it = by_component_.find(component);
    if (it == by_component_.end()) it = by_component_.find("");
    if (it == by_component_.end()) return std::nullopt;
    const nlohmann::json& c = it->second;
    DITGEN_CHECK(!c.value("use_dora", false), "{}: a DoRA adapter (use_dora); ditgen merges plain LoRA only", where_);
    DITGEN_CHECK(!c.value("lora_bias", false), "{}: an adapter with LoRA biases (lora_bias); ditgen merges plain LoRA only",
                 where_);
    double r = number(c, "r", 8), alpha = number(c, "lora_alpha", 8);  // PEFT's defaults
    if (auto p = pattern(c, "rank_pattern", module)) r = *p;
    if (auto p = pattern(c, "alpha_pattern", module)) alpha = *p;
    DITGEN_CHECK(static_cast<int64_t>(r) == rank,
                 "{}: module '{}' has rank {} but the file's lora_adapter_metadata says r = {}", where_,
                 io::printable(module), rank, r);
    return c.value("use_rslora", false) ? alpha / std::sqrt(r) : alpha / r;
  }

 private:
  double number(const nlohmann::json& c, const char* key, double fallback) const {
    if (!c.contains(key) || c[key].is_null()) return fallback;
    DITGEN_CHECK(c[key].is_number() && std::isfinite(c[key].get<double>()) && c[key].get<double>() > 0,
                 "{}: lora_adapter_metadata '{}' must be a positive number, got {}", where_, key, c[key].dump());
    return c[key].get<double>();
  }
  // PEFT matches a pattern against the end of a module name at a '.' boundary (a leading '^' anchors it
  // at the start).
  std::optional<double> pattern(const nlohmann::json& c, const char* key, const std::string& module) const {
    if (!c.contains(key) || !c[key].is_object()) return std::nullopt;
    for (const auto& [p, v] : c[key].items()) {
      bool match = false;
      try {
        match = std::regex_match(module, std::regex("(.*\\.)?(" + p + ")"));
      } catch (const std::regex_error&) {
        fail("{}: lora_adapter_metadata {} has a pattern '{}' that is not a regular expression", where_, key,
             io::printable(p));
      }
      if (!match) continue;
      DITGEN_CHECK(v.is_number() && v.get<double>() > 0, "{}: lora_adapter_metadata {}['{}'] must be a positive number",
                   where_, key, io::printable(p));
      return v.get<double>();
    }
    return std::nullopt;
  }
  bool present_ = false;
  std::string where_;
  std::map<std::string, nlohmann::json> by_component_;
};

}  // namespace

LoraFile parse_lora_flag(const std::string& value, const std::string& flag) {
  LoraFile f;
  const std::string err = flag_error(value, &f);
  DITGEN_CHECK(err.empty(), "{} {}", flag, err);
  return f;
}

std::string lora_flag_error(const std::string& value) { return flag_error(value, nullptr); }

LoraModel lora_model(const std::string& command) {
  if (command == "flux2") return LoraModel::Flux2;
  if (command == "qwen-image") return LoraModel::QwenImage;
  if (command == "ltx2") return LoraModel::Ltx2;
  fail("--lora: the {} command takes no LoRA (FLUX.2, Qwen-Image and LTX-2 do)", command);
}

std::string to_string(LoraModel m) {
  switch (m) {
    case LoraModel::Flux2: return "FLUX.2";
    case LoraModel::QwenImage: return "Qwen-Image";
    case LoraModel::Ltx2: return "LTX-2";
  }
  return "";
}

// ---- LoraSet -------------------------------------------------------------------------------------

LoraSet::LoraSet(const std::vector<LoraFile>& files, LoraModel model) : model_(model) {
  for (const auto& lf : files) {
    const std::string where = fmt::format("LoRA file '{}' (--lora)", io::printable(lf.path));
    DITGEN_CHECK(io::file_exists(lf.path), "--lora '{}': no such file", io::printable(lf.path));
    auto file = io::SafetensorsFile::open(lf.path);
    const AdapterConfig config(*file, where);

    // Group the keys by module; anything else is refused by name.
    std::map<std::string, Module> modules;
    for (const auto& key : file->names()) {
      const std::string k = io::printable(key);
      DITGEN_CHECK(key.find("dora_scale") == std::string::npos && key.find("lora_magnitude_vector") == std::string::npos,
                   "{}: key '{}' belongs to a DoRA adapter; ditgen merges plain LoRA only", where, k);
      DITGEN_CHECK(!starts_with(key, "lora_te") && !starts_with(key, "text_encoder"),
                   "{}: key '{}' is for the text encoder; ditgen applies LoRA to the {} only", where, k,
                   model == LoraModel::Ltx2 ? "transformer and the text connectors" : "transformer");
      DITGEN_CHECK(!ends_with(key, ".lora_B.bias") && !ends_with(key, ".lora_up.bias"),
                   "{}: key '{}' is a LoRA bias; ditgen merges plain LoRA only", where, k);
      const Suffix* hit = nullptr;
      for (const auto& s : kSuffixes)
        if (ends_with(key, s.text)) hit = &s;
      DITGEN_CHECK(hit, "{}: key '{}' is not a LoRA tensor (names end in .lora_A.weight and .lora_B.weight, "
                   ".lora_down.weight and .lora_up.weight, or .alpha)", where, k);
      Module& m = modules[key.substr(0, key.size() - std::strlen(hit->text))];
      std::string& slot = hit->part == 'a' ? m.a : hit->part == 'b' ? m.b : m.alpha;
      DITGEN_CHECK(slot.empty(), "{}: keys '{}' and '{}' are the same tensor of one module", where,
                   io::printable(slot), k);
      slot = key;
    }

    int64_t layers = 0;
    for (const auto& [name, m] : modules) {
      const std::string some_key = io::printable(!m.a.empty() ? m.a : !m.b.empty() ? m.b : m.alpha);
      DITGEN_CHECK(!m.a.empty() && !m.b.empty(), "{}: module '{}' has no {} (key '{}')", where,
                   io::printable(name), m.a.empty() ? "lora_A / lora_down weight" : "lora_B / lora_up weight",
                   some_key);
      const auto& ai = file->info(m.a);
      const auto& bi = file->info(m.b);
      DITGEN_CHECK(ai.shape.size() == 2 && bi.shape.size() == 2 && ai.shape[0] == bi.shape[1] && ai.shape[0] > 0,
                   "{}: '{}' has shape {} and '{}' has shape {}: a LoRA pair is A [r, in] and B [out, r]", where,
                   io::printable(m.a), io::shape_str(ai.shape), io::printable(m.b), io::shape_str(bi.shape));
      for (const auto* t : {&ai, &bi})
        DITGEN_CHECK(t->dtype == "F32" || t->dtype == "BF16" || t->dtype == "F16",
                     "{}: '{}' is stored as {}; LoRA weights must be F32, BF16 or F16", where, io::printable(t->name),
                     t->dtype);
      const int64_t rank = ai.shape[0];

      const std::vector<Target> targets = target_of(model, name);
      DITGEN_CHECK(!targets.empty(),
                   "{}: key '{}' matches no layer of the {} transformer (a {} LoRA's keys start with {}): is the "
                   "file a LoRA for another model?",
                   where, some_key, to_string(model), to_string(model), prefixes_of(model));

      // alpha / rank: the module's `.alpha`, else the adapter config in the metadata, else 1.
      double alpha_scale = 1.0;
      if (!m.alpha.empty()) {
        const at::Tensor a = file->read(m.alpha);
        DITGEN_CHECK(a.numel() == 1 && at::isfinite(a).all().item<bool>(),
                     "{}: '{}' must hold one finite number (the LoRA alpha), got {} values", where,
                     io::printable(m.alpha), a.numel());
        alpha_scale = a.to(at::kDouble).item<double>() / static_cast<double>(rank);
      } else if (auto s = config.scale(targets[0].component, targets[0].module, rank)) {
        alpha_scale = *s;
      }

      for (const auto& t : targets) {
        const int64_t out = bi.shape[0];
        LoraTerm term;
        term.file = file;
        term.a_key = m.a;
        term.b_key = m.b;
        term.module = name;
        term.scale = lf.scale * alpha_scale;
        if (t.swap_halves) {
          DITGEN_CHECK(out % 2 == 0, "{}: '{}' has {} rows, which cannot be (shift, scale) halves", where,
                       io::printable(m.b), out);
          term.b_rows = {{out / 2, out / 2}, {0, out / 2}};
        } else {
          DITGEN_CHECK(out % t.parts == 0, "{}: '{}' has {} rows, which cannot be split into {} equal projections",
                       where, io::printable(m.b), out, t.parts);
          term.b_rows = {{t.index * (out / t.parts), out / t.parts}};
        }
        auto& list = components_[t.component][t.module + ".weight"];
        for (const auto& other : list)
          DITGEN_CHECK(other.file != file, "{}: modules '{}' and '{}' both change layer '{}'", where,
                       io::printable(other.module), io::printable(name), io::printable(t.module));
        list.push_back(std::move(term));
        ++layers;
      }
    }
    DITGEN_CHECK(layers > 0, "{}: the file holds no LoRA tensors", where);
    summary_.push_back({lf.path, lf.scale, layers});
  }
}

const LoraSet::Terms* LoraSet::component(const std::string& name) const {
  auto it = components_.find(name);
  return it == components_.end() ? nullptr : &it->second;
}

// ---- LoraSource ----------------------------------------------------------------------------------

namespace {

// The ranges of B's stored rows that give the layer's rows `want` (in order), where B's rows `segments`
// (in order) are the layer's rows 0, 1, ...
std::vector<std::pair<int64_t, int64_t>> stored_rows(const std::vector<std::pair<int64_t, int64_t>>& segments,
                                                     const std::vector<std::pair<int64_t, int64_t>>& want) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (auto [s, l] : want) {
    int64_t t = 0;  // the layer row where this segment starts
    for (auto [bs, bl] : segments) {
      const int64_t lo = std::max(s, t), hi = std::min(s + l, t + bl);
      if (lo < hi) {
        const int64_t start = bs + (lo - t);
        if (!out.empty() && out.back().first + out.back().second == start) out.back().second += hi - lo;
        else out.emplace_back(start, hi - lo);
      }
      t += bl;
    }
  }
  return out;
}

int64_t rows_of(const std::vector<std::pair<int64_t, int64_t>>& r) {
  int64_t n = 0;
  for (auto [s, l] : r) n += l;
  return n;
}

}  // namespace

LoraSource::LoraSource(std::shared_ptr<WeightSource> inner, std::shared_ptr<const LoraSet> set, std::string component)
    : WrappedSource(std::move(inner)), set_(std::move(set)), component_(std::move(component)),
      terms_(set_->component(component_)) {
  if (!terms_) return;
  // A checkpoint names its tensors: a LoRA layer it lacks is refused before anything loads. (Random
  // weights have every key; those are checked once loaded, by check_all_used.)
  for (const auto& [key, terms] : *terms_)
    DITGEN_CHECK(WrappedSource::has(key),
                 "LoRA file '{}' (--lora): key '{}' matches no layer of the {} {} (there is no weight '{}' in {}): is "
                 "the file a LoRA for another model?",
                 io::printable(terms[0].file->path()), io::printable(terms[0].a_key), to_string(set_->model()),
                 component_, io::printable(key), io::printable(WrappedSource::describe()));
}

at::Tensor LoraSource::load(const std::string& key, const std::vector<int64_t>& full_shape, const io::Slice& slice,
                            at::ScalarType dtype, const at::Device& device, Init init) {
  auto it = terms_ ? terms_->find(key) : LoraSet::Terms::const_iterator();
  if (!terms_ || it == terms_->end()) return WrappedSource::load(key, full_shape, slice, dtype, device, init);
  merged_.insert(key);
  const auto& terms = it->second;
  for (const auto& t : terms) {
    const auto& ai = t.file->info(t.a_key);
    const std::string where = fmt::format("LoRA file '{}' (--lora)", io::printable(t.file->path()));
    DITGEN_CHECK(full_shape.size() == 2, "{}: '{}' changes '{}', which is not a linear weight (shape {})", where,
                 io::printable(t.a_key), io::printable(key), io::shape_str(full_shape));
    DITGEN_CHECK(ai.shape[1] == full_shape[1] && rows_of(t.b_rows) == full_shape[0],
                 "{}: '{}' {} and '{}' ({} rows for this layer) do not fit layer '{}' of shape {} [out, in]: is the "
                 "LoRA for another model or model size?",
                 where, io::printable(t.a_key), io::shape_str(ai.shape), io::printable(t.b_key), rows_of(t.b_rows),
                 io::printable(key), io::shape_str(full_shape));
  }
  // SCALE 0 is the plain weight, bit for bit.
  bool any = false;
  for (const auto& t : terms) any = any || t.scale != 0;
  if (!any) return WrappedSource::load(key, full_shape, slice, dtype, device, init);

  // W + sum s * B @ A in float32 on the device, this rank's slice only.
  at::Tensor w = WrappedSource::load(key, full_shape, slice, at::kFloat, device, init);
  for (const auto& t : terms) {
    if (t.scale == 0) continue;
    io::Slice a_slice, b_slice;
    b_slice.dim = 0;
    if (slice.dim == 1) a_slice = slice;  // row-parallel: this rank's input columns of A
    b_slice.ranges = stored_rows(t.b_rows, slice.dim == 0 ? slice.ranges : std::vector<std::pair<int64_t, int64_t>>{
                                                                                {0, full_shape[0]}});
    const at::Tensor A = t.file->read(t.a_key, a_slice, at::kFloat, device);  // [r, in or in/tp]
    const at::Tensor B = t.file->read(t.b_key, b_slice, at::kFloat, device);  // [out or out/tp, r]
    w.addmm_(B, A, /*beta=*/1, /*alpha=*/t.scale);
  }
  DITGEN_CHECK(at::isfinite(w).all().item<bool>(),
               "LoRA file '{}' (--lora) makes layer '{}' non-finite (NaN or Inf in its lora_A / lora_B, or a scale too "
               "large)",
               io::printable(terms[0].file->path()), io::printable(key));
  return dtype == at::kFloat ? w : w.to(dtype);
}

std::optional<Fp8Weight> LoraSource::load_fp8(const std::string& key, const std::vector<int64_t>& full_shape,
                                              const io::Slice& slice, const at::Device& device) {
  if (terms_ && terms_->count(key)) return std::nullopt;
  return WrappedSource::load_fp8(key, full_shape, slice, device);
}

void LoraSource::check_all_used() const {
  WrappedSource::check_all_used();
  if (!terms_) return;
  for (const auto& [key, terms] : *terms_)
    DITGEN_CHECK(merged_.count(key),
                 "LoRA file '{}' (--lora): key '{}' matches no layer of the {} {} (it loads no weight '{}'): is the "
                 "file a LoRA for another model?",
                 io::printable(terms[0].file->path()), io::printable(terms[0].a_key), to_string(set_->model()),
                 component_, io::printable(key));
}

std::string LoraSource::describe() const {
  std::string s = WrappedSource::describe();
  if (!terms_) return s;
  std::set<std::string> files;
  for (const auto& [key, terms] : *terms_)
    for (const auto& t : terms) files.insert(t.file->path());
  for (const auto& f : files) s += " + LoRA " + f;
  return s;
}

WrapSource lora_wrapper(std::shared_ptr<const LoraSet> set, WrapSource previous) {
  return [set, previous](const std::string& component, std::shared_ptr<WeightSource> src) {
    if (previous) src = previous(component, std::move(src));
    if (!set->component(component)) return src;
    return std::static_pointer_cast<WeightSource>(std::make_shared<LoraSource>(std::move(src), set, component));
  };
}

}  // namespace ditgen::nn
