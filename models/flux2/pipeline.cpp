#include "models/flux2/pipeline.h"

#include "lib/io/checkpoint.h"
#include "lib/io/image.h"
#include "lib/io/image_read.h"
#include "lib/io/json.h"
#include "lib/pipeline/model_files.h"
#include "lib/runtime/embedded_configs.h"
#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"
#include "lib/runtime/progress.h"
#include "lib/runtime/trace.h"
#include "lib/text/tiny_tokenizer.h"
#include "models/flux2/image_latents.h"
#include "models/flux2/prompt.h"
#include "models/flux2/work.h"

namespace ditgen::flux2 {

// ---- scheduler ----------------------------------------------------------------------------------

SchedulerConfig SchedulerConfig::from_json(const nlohmann::json& j, const std::string& where) {
  // The whole file is checked as every flow-matching scheduler config is (ranges, switches this sampler
  // lacks, num_train_timesteps), though FLUX.2 reads only two fields: its mu is the pipeline's empirical one.
  SchedulerConfig c;
  sched::FlowMatchConfig defaults;
  defaults.use_dynamic_shifting = c.use_dynamic_shifting;
  defaults.shift = c.shift;
  const sched::FlowMatchConfig checked = sched::FlowMatchConfig::from_json(j, where, defaults);
  c.use_dynamic_shifting = checked.use_dynamic_shifting;
  c.shift = checked.shift;
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

Pipeline::Pipeline(const TransformerConfig& tcfg, const nn::Weights& tw, const VaeConfig& vcfg,
                   const nn::Weights& vw, const SchedulerConfig& scfg, std::shared_ptr<parallel::Context> ctx, bool with_encoder,
                   bool offload)
    : ModelBase(/*separate_cfg_cache=*/false),
      ctx_(std::move(ctx)),
      dtype_(tw.dtype()),
      device_(tw.device()),
      scheduler_(scfg) {
  name_ = "flux2";
  offload_ = offload;
  transformer_ = std::make_unique<Transformer>(tcfg, tw, ctx_, false, offload_streamer("transformer", device_));
  tcfg_ = tcfg;
  vae_ = std::make_unique<Vae>(vcfg, vw, with_encoder);
}

Pipeline::Pipeline(const LoadOptions& opt, std::shared_ptr<parallel::Context> ctx)
    : ModelBase(/*separate_cfg_cache=*/false),
      ctx_(std::move(ctx)),
      dtype_(opt.dtype),
      device_(opt.device),
      parallel_vae_(opt.parallel_vae) {
  offload_ = opt.offload;
  const pipeline::ModelFiles files(opt, identity());
  name_ = files.name();
  defaults_ = files.defaults();
  text_layers_ = opt.text_layers.empty() ? defaults_["text_encoder_out_layers"].get<std::vector<int>>()
                                         : opt.text_layers;
  for (int l : text_layers_)
    DITGEN_CHECK(l >= 1, "--text-encoder-out-layers: layer {} is not a decoder layer (1-based)", l);
  const int te_layers_needed = *std::max_element(text_layers_.begin(), text_layers_.end());

  const auto tc = files.config("transformer"), vc = files.config("vae"), sc = files.scheduler();
  const TransformerConfig tcfg = TransformerConfig::from_json(tc.json, tc.where);
  const VaeConfig vcfg = VaeConfig::from_json(vc.json, vc.where);
  scheduler_ = SchedulerConfig::from_json(sc.json, sc.where);
  pipeline::ComponentConfig te = files.config("text_encoder");
  if (opt.load_text_encoder || !files.from_folder())
    tokenizer_ = files.tokenizer(text::tiny_tekken_tokenizer);
  if (!files.from_folder() && !te.json.contains("vocab_size"))
    te.json["vocab_size"] = tokenizer_->vocab_size();
  te_json_ = te.json;

  auto tsrc = files.weights("transformer", {}, "load transformer");
  auto vsrc = files.weights("vae", Vae::unread_keys(/*with_encoder=*/opt.image_encoder));
  tcfg_ = tcfg;
  load_transformer_ = [this, tcfg, tsrc, fp8 = opt.fp8] {
    transformer_ = std::make_unique<Transformer>(tcfg, nn::Weights(tsrc, dtype_, device_), ctx_, fp8,
                                                 offload_streamer("transformer", device_));
    tsrc->check_all_used();
    bytes_read_["transformer"] = tsrc->bytes_read();
  };
  if (!opt.defer_transformer) load_deferred();
  vae_ = std::make_unique<Vae>(vcfg, nn::Weights(vsrc, dtype_, device_), /*with_encoder=*/opt.image_encoder);
  vsrc->check_all_used();
  DITGEN_CHECK(tcfg.in_channels * tcfg.patch_size * tcfg.patch_size == vcfg.patched_channels(),
               "the transformer takes {} input channels but the VAE's patchified latents have {}",
               tcfg.in_channels, vcfg.patched_channels());
  std::shared_ptr<nn::WeightSource> tesrc;
  if (opt.load_text_encoder) {
    const auto te_cfg = llm::DecoderConfig::from_json(te.json, te.where, llm::DecoderFamily::Mistral);
    DITGEN_CHECK(te_layers_needed <= te_cfg.num_hidden_layers,
                 "{}: FLUX.2 reads text-encoder layer {} but the encoder has {} layers", te.where,
                 te_layers_needed, te_cfg.num_hidden_layers);
    DITGEN_CHECK(
        static_cast<int64_t>(text_layers_.size()) * te_cfg.hidden_size == tcfg.joint_attention_dim,
        "{} text-encoder layers of width {} give {} features, but the transformer's joint_attention_dim "
        "is {}",
        text_layers_.size(), te_cfg.hidden_size, text_layers_.size() * te_cfg.hidden_size,
        tcfg.joint_attention_dim);
    tesrc = files.weights_via(
        "text_encoder",
        [&](std::shared_ptr<io::TensorStore> store) {
          return llm::open_decoder_source(store, te_cfg, te_layers_needed);
        },
        "load text encoder");
    text_encoder_ = llm::load_decoder(te_cfg, nn::Weights(tesrc, dtype_, device_), te_layers_needed, ctx_,
                                      opt.parallel_text, offload_streamer("text_encoder", device_));
    tesrc->check_all_used();
  }
  bytes_read_["vae"] = vsrc->bytes_read();
  bytes_read_["text_encoder"] = tesrc ? tesrc->bytes_read() : 0;
  if (!bytes_read_.count("transformer")) bytes_read_["transformer"] = 0;  // read later (deferred)
}

void Pipeline::release(pipeline::Component c) {
  if (c == pipeline::Component::TextEncoder) text_encoder_.reset();
  if (c == pipeline::Component::Transformer) transformer_.reset();  // the block cache keeps its report
}

// ---- stages -------------------------------------------------------------------------------------

at::Tensor Pipeline::encode_prompts(const std::vector<std::string>& prompts,
                                    int64_t max_sequence_length) const {
  DITGEN_CHECK(text_encoder_ && tokenizer_, "this pipeline was loaded without its text encoder");
  TokenBatch tokens = flux2_tokenize(*tokenizer_, prompts, max_sequence_length);
  auto hs =
      text_encoder_->forward(tokens.input_ids.to(device_), tokens.attention_mask.to(device_), text_layers_);
  at::Tensor stacked = at::stack(hs, 2);  // [B, L, layers, hidden]: features [layer a | layer b | ...]
  runtime::trace("text_encoder.input_ids", tokens.input_ids);
  at::Tensor embeds = stacked.reshape({stacked.size(0), stacked.size(1), -1}).to(dtype_);
  runtime::trace("prompt_embeds", embeds);
  return embeds;
}

std::shared_ptr<Conditioning> Pipeline::condition(const at::Tensor& prompt_embeds,
                                                  const pipeline::Settings& s) const {
  auto c = std::make_shared<Conditioning>();
  const int64_t m = pixel_multiple();
  c->prompt_embeds = prompt_embeds.to(device_, dtype_);
  c->txt_ids = text_ids(prompt_embeds.size(1)).to(device_);
  if (transformer_ && s.images.empty())  // with references the ids grow: predict() makes it
    c->rope = transformer_->rope(image_ids(s.height / m, s.width / m).to(device_), c->txt_ids);
  c->guidance =
      at::full({prompt_embeds.size(0)}, s.guidance, at::TensorOptions().dtype(at::kFloat).device(device_));
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

pipeline::StepWork Pipeline::step_work(const pipeline::Settings& s) const {
  const int64_t m = pixel_multiple();
  int64_t tokens = (s.height / m) * (s.width / m);
  for (const auto& im : s.images) {  // reference tokens join every step
    const at::Tensor r = prepare_reference(im.pixels, m, im.path);
    tokens += (r.size(0) / m) * (r.size(1) / m);
  }
  return flux2::step_work(tcfg_, tokens, s.max_sequence_length, s.batch);
}

// ---- reference images (editing) ----------------------------------------------------------------

void check_reference(const at::Tensor& pixels, const std::string& where) {
  const int64_t h = pixels.size(0), w = pixels.size(1);
  DITGEN_CHECK(h >= 64 && w >= 64, "--image '{}' is {}x{}: FLUX.2 needs both sides at least 64 px", where, w, h);
  DITGEN_CHECK(std::max(h, w) <= 8 * std::min(h, w),
               "--image '{}' is {}x{}: an aspect ratio over 8:1 is refused (as Flux2Pipeline)", where, w, h);
}

at::Tensor prepare_reference(const at::Tensor& pixels, int64_t multiple, const std::string& where) {
  check_reference(pixels, where);
  int64_t h = pixels.size(0), w = pixels.size(1);
  at::Tensor img = pixels;
  constexpr double kArea = 1024.0 * 1024.0;
  if (static_cast<double>(h * w) > kArea) {  // resized to that area (upstream: LANCZOS; here Catmull-Rom)
    const double scale = std::sqrt(kArea / static_cast<double>(h * w));
    w = static_cast<int64_t>(static_cast<double>(w) * scale);
    h = static_cast<int64_t>(static_cast<double>(h) * scale);
    img = io::resize_image(img, h, w);
  }
  return io::center_crop(img, h / multiple * multiple, w / multiple * multiple);
}

std::pair<int64_t, int64_t> Pipeline::image_size(const pipeline::Settings& s) const {
  const at::Tensor r = prepare_reference(s.images.at(0).pixels, pixel_multiple(), s.images[0].path);
  return {r.size(0), r.size(1)};
}

std::shared_ptr<const pipeline::Conditioning> Pipeline::encode_images(const pipeline::Settings& s) const {
  DITGEN_CHECK(vae_->has_encoder(), "internal: FLUX.2's VAE was loaded without its encoder");
  const int64_t m = pixel_multiple();
  std::vector<at::Tensor> images;
  for (const auto& im : s.images) {
    const at::Tensor px = prepare_reference(im.pixels, m, im.path);  // [H, W, 3] uint8
    images.push_back(
        px.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).div(255).mul(2).sub(1).to(device_, dtype_));
  }
  // VAE-P: every rank encodes a band of rows of each reference, and all get the same tokens.
  const ReferenceTokens t = reference_tokens(*vae_, images, 1, parallel_vae_ ? &ctx_->world() : nullptr);
  auto refs = std::make_shared<ReferenceImages>();
  refs->latents = t.latents;         // [1, N_ref, 4L]
  refs->ids = t.ids[0].to(device_);  // [N_ref, 4]
  runtime::trace("image_latents", refs->latents);
  return refs;
}

pipeline::Latents Pipeline::predict(const pipeline::Latents& latents, float t,
                                    const pipeline::Conditioning& cond, int branch,
                                    const pipeline::Settings& s) const {
  const auto& c = static_cast<const Conditioning&>(cond);
  DITGEN_CHECK(transformer_, "internal: FLUX.2's transformer is not loaded (deferred or released)");
  const auto* refs = static_cast<const ReferenceImages*>(s.image_conditioning.get());
  if (!c.rope.defined()) {  // encoded before the transformer was loaded (memory plan), or with references
    const int64_t m = pixel_multiple();
    at::Tensor ids = image_ids(s.height / m, s.width / m).to(device_);
    if (refs) ids = at::cat({ids, refs->ids}, 0);  // the references' tokens follow the noisy ones
    c.rope = transformer_->rope(ids, c.txt_ids);
  }
  cache::Cache* cache = cache_.get(s.cache, ctx_, "FLUX.2");
  TransformerInput in;
  in.hidden_states = latents[0];  // [B, N, C_p]
  if (refs)  // [B, N + N_ref, C_p]: the clean references at every step
    in.hidden_states =
        at::cat({latents[0], refs->latents.expand({latents[0].size(0), -1, -1}).to(latents[0].scalar_type())}, 1);
  in.encoder_hidden_states = c.prompt_embeds;
  in.txt_ids = c.txt_ids;
  in.rope = c.rope;
  in.guidance = c.guidance;
  in.timestep = pipeline::model_timestep(t, latents[0].size(0), latents[0].scalar_type(), device_);
  const at::Tensor v = transformer_->forward(in, cache, branch);
  return {refs ? v.narrow(1, 0, latents[0].size(1)) : v};  // the noisy tokens' velocity
}

pipeline::Media Pipeline::decode(const pipeline::Latents& latents, const pipeline::Settings& s) const {
  const int64_t m = pixel_multiple();
  comm::Communicator* vae_ranks = parallel_vae_ ? &ctx_->world() : nullptr;  // VAE-P over every rank
  return {vae_->decode_to_image(latents[0], s.height / m, s.width / m, vae_ranks)};
}

}  // namespace ditgen::flux2
