#include "models/flux2/pipeline.h"

#include "lib/io/checkpoint.h"
#include "lib/io/image.h"
#include "lib/io/json.h"
#include "lib/runtime/embedded_configs.h"
#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"
#include "lib/runtime/progress.h"
#include "lib/runtime/trace.h"
#include "lib/text/tiny_tokenizer.h"
#include "models/flux2/prompt.h"
#include "models/flux2/work.h"

namespace ditgen::flux2 {

// ---- scheduler ----------------------------------------------------------------------------------

SchedulerConfig SchedulerConfig::from_json(const nlohmann::json& j, const std::string& where) {
  SchedulerConfig c;
  c.use_dynamic_shifting = io::json_get<bool>(j, "use_dynamic_shifting", c.use_dynamic_shifting, where);
  c.shift = io::json_get<double>(j, "shift", c.shift, where);
  const std::string kind = io::json_get<std::string>(j, "time_shift_type", "exponential", where);
  DITGEN_CHECK(kind == "exponential", "{}: time_shift_type '{}' is not supported (FLUX.2 uses 'exponential')",
               where, kind);
  DITGEN_CHECK(c.shift > 0, "{}: shift must be positive, got {}", where, c.shift);
  return c;
}

sched::Schedule SchedulerConfig::schedule(int64_t steps, int64_t image_seq_len) const {
  // Flux2Pipeline always passes its empirical mu; without dynamic shifting the scheduler ignores it.
  if (use_dynamic_shifting)
    return sched::exponential_shift_schedule(steps, sched::flux2_empirical_mu(image_seq_len, steps));
  return sched::static_shift_schedule(steps, shift);
}

// ---- ids ----------------------------------------------------------------------------------------

at::Tensor image_ids(int64_t h, int64_t w) {
  at::Tensor rows = at::arange(h, at::kLong).repeat_interleave(w);
  at::Tensor cols = at::arange(w, at::kLong).repeat({h});
  at::Tensor zero = at::zeros({h * w}, at::kLong);
  return at::stack({zero, rows, cols, zero}, 1);
}

at::Tensor text_ids(int64_t length) {
  at::Tensor zero = at::zeros({length}, at::kLong);
  return at::stack({zero, zero, zero, at::arange(length, at::kLong)}, 1);
}

// ---- loading ------------------------------------------------------------------------------------

namespace {

const nlohmann::json& preset() {
  static const nlohmann::json p = io::parse_json(embedded_configs().at("flux2"), "configs/flux2.json");
  return p;
}

uint64_t component_seed(uint64_t seed, const std::string& component) {
  return nn::stable_hash(component, 1469598103934665603ull ^ seed);
}

// Checkpoint loads are long at real size: progress per tensor on rank 0.
std::shared_ptr<nn::WeightSource> with_progress(std::shared_ptr<nn::CheckpointSource> src, const std::string& label) {
  return std::make_shared<nn::ProgressSource>(src, label, src->expected_count());
}

}  // namespace

Pipeline::Pipeline(const TransformerConfig& tcfg, const nn::Weights& tw, const VaeConfig& vcfg,
                   const nn::Weights& vw, const SchedulerConfig& scfg, std::shared_ptr<parallel::Context> ctx)
    : ctx_(std::move(ctx)), name_("flux2"), dtype_(tw.dtype()), device_(tw.device()), scheduler_(scfg) {
  transformer_ = std::make_unique<Transformer>(tcfg, tw, ctx_);
  tcfg_ = tcfg;
  vae_ = std::make_unique<Vae>(vcfg, vw, /*with_encoder=*/false);
}

Pipeline::Pipeline(const LoadOptions& opt, std::shared_ptr<parallel::Context> ctx)
    : ctx_(std::move(ctx)), dtype_(opt.dtype), device_(opt.device), parallel_vae_(opt.parallel_vae) {
  const bool from_folder = !opt.model_path.empty();
  const bool tiny = !from_folder && !opt.random_weights;
  name_ = tiny ? "flux2-tiny" : (from_folder && !opt.random_weights ? "flux2" : "flux2-random");
  const nlohmann::json& p = preset();
  defaults_ = tiny ? p["tiny"]["defaults"] : p["defaults"];
  if (from_folder && io::dir_exists(opt.model_path)) defaults_ = pipeline::folder_defaults(opt.model_path, defaults_);
  text_layers_ = opt.text_layers.empty() ? defaults_["text_encoder_out_layers"].get<std::vector<int>>() : opt.text_layers;
  for (int l : text_layers_) DITGEN_CHECK(l >= 1, "--text-encoder-out-layers: layer {} is not a decoder layer (1-based)", l);
  const int te_layers_needed = *std::max_element(text_layers_.begin(), text_layers_.end());

  TransformerConfig tcfg;
  VaeConfig vcfg;
  nlohmann::json te_json;
  std::string te_where;
  std::string te_dir;  // a checkpoint's text_encoder/ folder, opened once its config is known
  std::shared_ptr<nn::WeightSource> tsrc, vsrc, tesrc;

  if (from_folder) {
    const std::string root = opt.model_path;
    DITGEN_CHECK(io::dir_exists(root), "--model-path '{}' is not a folder", root);
    const std::string index = io::join_path(root, "model_index.json");
    DITGEN_CHECK(io::file_exists(index), "--model-path '{}' has no model_index.json: is it a diffusers folder?",
                 root);
    const auto mi = io::read_json_file(index);
    const std::string cls = io::json_get<std::string>(mi, "_class_name", "", index);
    DITGEN_CHECK(cls == p["model_index_class"].get<std::string>(),
                 "{} names pipeline class '{}', but `ditgen flux2` needs a Flux2Pipeline folder", index, cls);
    auto component = [&](const std::string& name) {
      const std::string dir = io::join_path(root, name);
      DITGEN_CHECK(io::dir_exists(dir), "'{}' is missing its '{}' folder", root, name);
      return dir;
    };
    const std::string tdir = component("transformer"), vdir = component("vae"), tedir = component("text_encoder");
    tcfg = TransformerConfig::from_json(io::read_json_file(io::join_path(tdir, "config.json")),
                                        io::join_path(tdir, "config.json"));
    vcfg = VaeConfig::from_json(io::read_json_file(io::join_path(vdir, "config.json")), io::join_path(vdir, "config.json"));
    te_where = io::join_path(tedir, "config.json");
    te_json = io::read_json_file(te_where);
    const std::string sched_path = io::join_path(component("scheduler"), "scheduler_config.json");
    scheduler_ = SchedulerConfig::from_json(io::read_json_file(sched_path), sched_path);
    if (opt.load_text_encoder) tokenizer_ = text::Tokenizer::from_file(component("tokenizer"));
    if (!opt.random_weights) {
      tsrc = with_progress(std::make_shared<nn::CheckpointSource>(io::TensorStore::open_dir(tdir)), "load transformer");
      vsrc = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_dir(vdir), "",
                                                    Vae::unread_keys(/*with_encoder=*/false));
      te_dir = tedir;
    }
  } else {
    const nlohmann::json& cfgs = tiny ? p["tiny"] : p;
    if (tiny) {
      tcfg = TransformerConfig::from_json(cfgs["transformer"], "configs/flux2.json tiny.transformer");
      vcfg = VaeConfig::from_json(cfgs["vae"], "configs/flux2.json tiny.vae");
      te_json = cfgs["text_encoder"];
    } else {
      te_json = p["text_encoder"];  // FLUX.2-dev's Mistral-Small language model
    }
    te_where = tiny ? "configs/flux2.json tiny.text_encoder" : "configs/flux2.json text_encoder";
    scheduler_ = SchedulerConfig::from_json(tiny ? cfgs["scheduler"] : p["scheduler"], "configs/flux2.json scheduler");
    tokenizer_ = text::tiny_tekken_tokenizer();  // built once per process
    if (!te_json.contains("vocab_size")) te_json["vocab_size"] = tokenizer_->vocab_size();
  }
  te_json_ = te_json;
  std::optional<llm::DecoderConfig> te_cfg;
  if (opt.load_text_encoder) {
    te_cfg = llm::DecoderConfig::from_json(te_json, te_where, llm::DecoderFamily::Mistral);
    if (!te_dir.empty())
      tesrc = with_progress(llm::open_decoder_source(io::TensorStore::open_dir(te_dir), *te_cfg, te_layers_needed),
                            "load text encoder");
  }
  if (!tsrc) {
    tsrc = std::make_shared<nn::RandomSource>(component_seed(opt.weight_seed, "transformer"));
    vsrc = std::make_shared<nn::RandomSource>(component_seed(opt.weight_seed, "vae"));
    tesrc = std::make_shared<nn::RandomSource>(component_seed(opt.weight_seed, "text_encoder"));
  }
  if (opt.wrap_source) {
    tsrc = opt.wrap_source("transformer", tsrc);
    vsrc = opt.wrap_source("vae", vsrc);
    if (tesrc) tesrc = opt.wrap_source("text_encoder", tesrc);
  }
  tcfg_ = tcfg;
  load_transformer_ = [this, tcfg, tsrc, fp8 = opt.fp8] {
    transformer_ = std::make_unique<Transformer>(tcfg, nn::Weights(tsrc, dtype_, device_), ctx_, fp8);
    tsrc->check_all_used();
    bytes_read_["transformer"] = tsrc->bytes_read();
  };
  if (!opt.defer_transformer) load_deferred();
  vae_ = std::make_unique<Vae>(vcfg, nn::Weights(vsrc, dtype_, device_), /*with_encoder=*/false);
  vsrc->check_all_used();
  DITGEN_CHECK(tcfg.in_channels * tcfg.patch_size * tcfg.patch_size == vcfg.patched_channels(),
               "the transformer takes {} input channels but the VAE's patchified latents have {}",
               tcfg.in_channels, vcfg.patched_channels());
  if (te_cfg) {
    DITGEN_CHECK(te_layers_needed <= te_cfg->num_hidden_layers,
                 "{}: FLUX.2 reads text-encoder layer {} but the encoder has {} layers", te_where, te_layers_needed,
                 te_cfg->num_hidden_layers);
    DITGEN_CHECK(static_cast<int64_t>(text_layers_.size()) * te_cfg->hidden_size == tcfg.joint_attention_dim,
                 "{} text-encoder layers of width {} give {} features, but the transformer's joint_attention_dim "
                 "is {}",
                 text_layers_.size(), te_cfg->hidden_size, text_layers_.size() * te_cfg->hidden_size,
                 tcfg.joint_attention_dim);
    text_encoder_ = llm::load_decoder(*te_cfg, nn::Weights(tesrc, dtype_, device_), te_layers_needed, ctx_,
                                      opt.parallel_text);
    tesrc->check_all_used();
  }
  bytes_read_["vae"] = vsrc->bytes_read();
  bytes_read_["text_encoder"] = tesrc ? tesrc->bytes_read() : 0;
  if (!bytes_read_.count("transformer")) bytes_read_["transformer"] = 0;  // read later (deferred)
}

void Pipeline::load_deferred() {
  if (!load_transformer_) return;
  auto load = std::move(load_transformer_);
  load_transformer_ = nullptr;
  load();
}

void Pipeline::release(pipeline::Component c) {
  if (c == pipeline::Component::TextEncoder) text_encoder_.reset();
  if (c == pipeline::Component::Transformer) transformer_.reset();  // the block cache keeps its report
}

// ---- stages -------------------------------------------------------------------------------------

at::Tensor Pipeline::encode_prompts(const std::vector<std::string>& prompts, int64_t max_sequence_length) const {
  DITGEN_CHECK(text_encoder_ && tokenizer_, "this pipeline was loaded without its text encoder");
  TokenBatch tokens = flux2_tokenize(*tokenizer_, prompts, max_sequence_length);
  auto hs = text_encoder_->forward(tokens.input_ids.to(device_), tokens.attention_mask.to(device_), text_layers_);
  at::Tensor stacked = at::stack(hs, 2);  // [B, L, layers, hidden]: features [layer a | layer b | ...]
  runtime::trace("text_encoder.input_ids", tokens.input_ids);
  at::Tensor embeds = stacked.reshape({stacked.size(0), stacked.size(1), -1}).to(dtype_);
  runtime::trace("prompt_embeds", embeds);
  return embeds;
}

std::shared_ptr<Conditioning> Pipeline::condition(const at::Tensor& prompt_embeds, const pipeline::Settings& s) const {
  auto c = std::make_shared<Conditioning>();
  const int64_t m = pixel_multiple();
  c->prompt_embeds = prompt_embeds.to(device_, dtype_);
  c->txt_ids = text_ids(prompt_embeds.size(1)).to(device_);
  if (transformer_) c->rope = transformer_->rope(image_ids(s.height / m, s.width / m).to(device_), c->txt_ids);
  c->guidance = at::full({prompt_embeds.size(0)}, s.guidance, at::TensorOptions().dtype(at::kFloat).device(device_));
  return c;
}

std::shared_ptr<pipeline::Conditioning> Pipeline::encode(const std::vector<std::string>& prompts,
                                                         const pipeline::Settings& s) const {
  return condition(encode_prompts(prompts, s.max_sequence_length), s);
}

pipeline::Latents Pipeline::initial_latents(const pipeline::Settings& s) const {
  const int64_t m = pixel_multiple();
  const int64_t c = transformer_->config().in_channels;
  const std::vector<int64_t> shape = {s.batch, c, s.height / m, s.width / m};
  at::Generator gen = at::detail::createCPUGenerator(s.seed);
  at::Tensor noise;
  try {
    noise = at::randn(shape, gen, at::TensorOptions().dtype(dtype_));
  } catch (const c10::Error&) {  // older CPU kernels lack low-precision normal_
    noise = at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(dtype_);
  }
  return {nn::pack_latents(noise.to(device_))};  // [B, h*w, C_p]
}

sched::Schedule Pipeline::schedule(const pipeline::Settings& s) const {
  const int64_t m = pixel_multiple();
  return scheduler_.schedule(s.steps, (s.height / m) * (s.width / m));
}

void Pipeline::check(const pipeline::Settings& s) const {
  if (s.cache.enabled) s.cache.validate(s.steps);
}

void Pipeline::on_step(int64_t step, int64_t steps) const { cache_.on_step(step, steps); }
nlohmann::json Pipeline::cache_report() const { return cache_.report(); }
std::string Pipeline::cache_summary() const { return cache_.summary(); }

pipeline::StepWork Pipeline::step_work(const pipeline::Settings& s) const {
  const int64_t m = pixel_multiple();
  return flux2::step_work(tcfg_, (s.height / m) * (s.width / m), s.max_sequence_length, s.batch);
}

pipeline::Latents Pipeline::predict(const pipeline::Latents& latents, float t, const pipeline::Conditioning& cond,
                                    int branch, const pipeline::Settings& s) const {
  const auto& c = static_cast<const Conditioning&>(cond);
  DITGEN_CHECK(transformer_, "internal: FLUX.2's transformer is not loaded (deferred or released)");
  if (!c.rope.defined()) {  // encoded before the transformer was loaded (memory plan)
    const int64_t m = pixel_multiple();
    c.rope = transformer_->rope(image_ids(s.height / m, s.width / m).to(device_), c.txt_ids);
  }
  cache::Cache* cache = cache_.get(s.cache, ctx_, "FLUX.2");
  TransformerInput in;
  in.hidden_states = latents[0];
  in.encoder_hidden_states = c.prompt_embeds;
  in.txt_ids = c.txt_ids;
  in.rope = c.rope;
  in.guidance = c.guidance;
  in.timestep = pipeline::model_timestep(t, latents[0].size(0), latents[0].scalar_type(), device_);
  return {transformer_->forward(in, cache, branch)};
}

pipeline::Media Pipeline::decode(const pipeline::Latents& latents, const pipeline::Settings& s) const {
  const int64_t m = pixel_multiple();
  comm::Communicator* vae_ranks = parallel_vae_ ? &ctx_->world() : nullptr;  // VAE-P over every rank
  return {vae_->decode_to_image(latents[0], s.height / m, s.width / m, vae_ranks)};
}

}  // namespace ditgen::flux2
