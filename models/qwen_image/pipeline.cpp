#include "models/qwen_image/pipeline.h"

#include <spdlog/spdlog.h>

#include "lib/io/checkpoint.h"
#include "lib/io/image_read.h"
#include "lib/io/json.h"
#include "lib/nn/latents.h"
#include "lib/pipeline/model_files.h"
#include "lib/runtime/embedded_configs.h"
#include "lib/runtime/error.h"
#include "lib/runtime/trace.h"
#include "lib/text/tiny_tokenizer.h"
#include "models/qwen_image/image_latents.h"
#include "models/qwen_image/prompt.h"
#include "models/qwen_image/work.h"

namespace ditgen::qwen_image {

sched::FlowMatchConfig scheduler_defaults() {
  sched::FlowMatchConfig c;
  c.base_shift = 0.5;
  c.max_shift = 0.9;
  c.base_image_seq_len = 256;
  c.max_image_seq_len = 8192;
  c.shift_terminal = 0.02;
  return c;
}

// ---- loading ------------------------------------------------------------------------------------

Pipeline::Pipeline(const TransformerConfig& tcfg, const nn::Weights& tw, const VaeConfig& vcfg,
                   const nn::Weights& vw, const sched::FlowMatchConfig& scfg,
                   std::shared_ptr<parallel::Context> ctx, bool with_encoder)
    : ModelBase(/*separate_cfg_cache=*/true),
      ctx_(std::move(ctx)),
      dtype_(tw.dtype()),
      device_(tw.device()),
      scheduler_(scfg) {
  name_ = "qwen_image";
  transformer_ = std::make_unique<Transformer>(tcfg, tw, ctx_);
  tcfg_ = tcfg;
  vae_ = std::make_unique<Vae>(vcfg, vw, with_encoder);
}

Pipeline::Pipeline(const LoadOptions& opt, std::shared_ptr<parallel::Context> ctx)
    : ModelBase(/*separate_cfg_cache=*/true),
      ctx_(std::move(ctx)),
      dtype_(opt.dtype),
      device_(opt.device),
      parallel_vae_(opt.parallel_vae) {
  offload_ = opt.offload;
  const pipeline::ModelFiles files(opt, identity());
  name_ = files.name();
  defaults_ = files.defaults();

  const auto tc = files.config("transformer"), vc = files.config("vae"), sc = files.scheduler();
  const TransformerConfig tcfg = TransformerConfig::from_json(tc.json, tc.where);
  const VaeConfig vcfg = VaeConfig::from_json(vc.json, vc.where);
  scheduler_ = sched::FlowMatchConfig::from_json(sc.json, sc.where, scheduler_defaults());
  tokenizer_ = files.tokenizer(text::tiny_qwen_tokenizer);
  pipeline::ComponentConfig te = files.config("text_encoder");
  if (!files.from_folder() && !te.json.contains("vocab_size"))
    te.json["vocab_size"] = tokenizer_->vocab_size();
  te_json_ = te.json;
  const auto te_cfg = llm::DecoderConfig::from_json(te.json, te.where, llm::DecoderFamily::Qwen2);
  DITGEN_CHECK(
      te_cfg.family == llm::DecoderFamily::Qwen2,
      "{}: Qwen-Image's text encoder is a Qwen2.5-VL text model, but the config describes a {} model",
      te.where, llm::family_name(te_cfg.family));
  DITGEN_CHECK(te_cfg.hidden_size == tcfg.joint_attention_dim,
               "the text encoder's hidden_size {} ({}) differs from the transformer's joint_attention_dim {}",
               te_cfg.hidden_size, te.where, tcfg.joint_attention_dim);
  DITGEN_CHECK(tokenizer_->vocab_size() <= te_cfg.vocab_size,
               "the tokenizer has {} ids but the text encoder's vocab_size is {} ({})",
               tokenizer_->vocab_size(), te_cfg.vocab_size, te.where);
  DITGEN_CHECK(tcfg.in_channels == 4 * vcfg.z_dim && tcfg.out_channels == vcfg.z_dim,
               "the transformer takes {} packed channels and predicts {} latent channels, but the VAE's "
               "z_dim {} packs "
               "into {}",
               tcfg.in_channels, tcfg.out_channels, vcfg.z_dim, 4 * vcfg.z_dim);
  DITGEN_CHECK(tcfg.patch_size == 2,
               "the transformer's patch_size is {}; Qwen-Image packs 2x2 latent patches", tcfg.patch_size);

  auto tsrc = files.weights("transformer", {}, "load transformer");
  auto vsrc = files.weights("vae", Vae::unread_keys(/*with_encoder=*/opt.image_encoder));
  auto tesrc = files.weights_via(
      "text_encoder",
      [&](std::shared_ptr<io::TensorStore> store) {
        return llm::open_decoder_source(store, te_cfg, te_cfg.num_hidden_layers);
      },
      "load text encoder");
  tcfg_ = tcfg;
  load_transformer_ = [this, tcfg, tsrc, fp8 = opt.fp8] {
    transformer_ = std::make_unique<Transformer>(tcfg, nn::Weights(tsrc, dtype_, device_), ctx_, fp8,
                                                 offload_streamer("transformer", device_));
    tsrc->check_all_used();
    bytes_read_["transformer"] = tsrc->bytes_read();
  };
  bytes_read_["transformer"] = 0;  // until it is read (now, or by load_deferred)
  if (!opt.defer_transformer) load_deferred();
  vae_ = std::make_unique<Vae>(vcfg, nn::Weights(vsrc, dtype_, device_), /*with_encoder=*/opt.image_encoder);
  vsrc->check_all_used();
  text_encoder_ = llm::load_decoder(te_cfg, nn::Weights(tesrc, dtype_, device_), te_cfg.num_hidden_layers,
                                    ctx_, opt.parallel_text, offload_streamer("text_encoder", device_));
  tesrc->check_all_used();
  bytes_read_["vae"] = vsrc->bytes_read();
  bytes_read_["text_encoder"] = tesrc->bytes_read();
}

void Pipeline::release(pipeline::Component c) {
  if (c == pipeline::Component::TextEncoder) text_encoder_.reset();
  if (c == pipeline::Component::Transformer) transformer_.reset();
}

// ---- settings -----------------------------------------------------------------------------------

void Pipeline::check(const pipeline::Settings& s) const {
  if (s.cache.enabled) s.cache.validate(s.steps);
  DITGEN_CHECK(s.max_sequence_length <= kMaxPromptTokens,
               "--max-sequence-length {} is larger than Qwen-Image's limit of {} prompt tokens",
               s.max_sequence_length, kMaxPromptTokens);
}

std::string Pipeline::cfg_off_reason(const pipeline::Settings& s) const {
  if (!s.has_negative_prompt) return "no negative prompt is given";
  if (s.true_cfg_scale <= 1) return fmt::format("--true-cfg-scale {} is not above 1", s.true_cfg_scale);
  return "";
}

nlohmann::json Pipeline::report_settings(const pipeline::Settings& s) const {
  nlohmann::json j = {{"true_cfg_scale", s.true_cfg_scale}, {"true_cfg", cfg_off_reason(s).empty()}};
  if (!s.images.empty()) j["strength"] = s.strength;
  j["negative_prompt"] = s.has_negative_prompt ? nlohmann::json(s.negative_prompt) : nlohmann::json();
  return j;
}

std::pair<int64_t, int64_t> Pipeline::token_grid(const pipeline::Settings& s) const {
  const int64_t m = pixel_multiple();
  return {s.height / m, s.width / m};
}

// ---- stages -------------------------------------------------------------------------------------

std::shared_ptr<Conditioning> Pipeline::condition(const at::Tensor& embeds, const at::Tensor& mask,
                                                  const pipeline::Settings& s) const {
  auto c = std::make_shared<Conditioning>();
  c->embeds = embeds.to(device_, dtype_);
  if (mask.defined() && !mask.ne(0).all().item<bool>())
    c->mask = mask.to(at::kCPU, at::kLong);  // all ones: none
  const auto [h, w] = token_grid(s);
  if (transformer_) c->rope = transformer_->rope(1, h, w, embeds.size(1));
  return c;
}

std::shared_ptr<pipeline::Conditioning> Pipeline::encode(const std::vector<std::string>& prompts,
                                                         const pipeline::Settings& s) const {
  DITGEN_CHECK(text_encoder_ && tokenizer_, "this pipeline was loaded without its text encoder");
  const PromptEmbeds e =
      encode_prompts(*tokenizer_, *text_encoder_, prompts, s.max_sequence_length, dtype_, device_);
  spdlog::debug("qwen-image: {} prompt(s) encoded to {} text tokens", prompts.size(), e.embeds.size(1));
  runtime::trace("prompt_embeds", e.embeds);  // the first branch encoded: the conditional one
  return condition(e.embeds, e.mask, s);
}

namespace {
// A normal draw in `dtype` from `gen` on the CPU.
at::Tensor draw_normal(at::IntArrayRef shape, at::Generator& gen, at::ScalarType dtype) {
  try {
    return at::randn(shape, gen, at::TensorOptions().dtype(dtype));
  } catch (const c10::Error&) {  // older CPU kernels lack low-precision normal_
    return at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(dtype);
  }
}
}  // namespace

std::shared_ptr<const pipeline::Conditioning> Pipeline::encode_images(const pipeline::Settings& s) const {
  DITGEN_CHECK(vae_->has_encoder(), "internal: Qwen-Image's VAE was loaded without its encoder");
  const at::Tensor px = io::resize_image(s.images.at(0).pixels, s.height, s.width);  // [H, W, 3] uint8
  const at::Tensor x =
      px.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).div(255).mul(2).sub(1);  // [1, 3, H, W]
  auto c = std::make_shared<InputImageLatent>();
  c->posterior = img2img_posterior(*vae_, x.to(device_, dtype_), parallel_vae_ ? &ctx_->world() : nullptr);
  runtime::trace("image_latent_mean", c->posterior.mean);
  return c;
}

at::Tensor Pipeline::img2img_latents(const pipeline::Settings& s, const at::Tensor& sample_noise,
                                     const at::Tensor& noise) const {
  const auto* image = dynamic_cast<const InputImageLatent*>(s.image_conditioning.get());
  DITGEN_CHECK(image, "internal: Qwen-Image image-to-image without the encoded image");
  const auto [h, w] = token_grid(s);
  const float sigma = img2img_schedule(scheduler_.schedule(s.steps, h * w), s.strength).first_sigma();
  return img2img_initial_latents(*vae_, image->posterior, sample_noise, noise.to(device_), sigma);
}

pipeline::Latents Pipeline::initial_latents(const pipeline::Settings& s) const {
  const auto [h, w] = token_grid(s);
  const int64_t z = vae_->config().z_dim;
  at::Generator gen = at::detail::createCPUGenerator(s.seed);
  if (s.image_conditioning) {  // upstream's generator draws the posterior's sample first, then the noise
    const auto& post = static_cast<const InputImageLatent&>(*s.image_conditioning).posterior;
    const at::Tensor sample_noise = draw_normal(post.mean.sizes(), gen, dtype_);
    return {img2img_latents(s, sample_noise, draw_normal({s.batch, 1, z, 2 * h, 2 * w}, gen, dtype_))};
  }
  const at::Tensor noise = draw_normal({s.batch, 1, z, 2 * h, 2 * w}, gen, dtype_);
  // [B, z, 2h, 2w] -> [B, 4z, h, w] (channel c*4 + dy*2 + dx) -> [B, h*w, 4z]
  return {nn::pack_latents(nn::patchify(noise.select(1, 0))).to(device_)};
}

sched::Schedule Pipeline::schedule(const pipeline::Settings& s) const {
  const auto [h, w] = token_grid(s);
  const sched::Schedule full = scheduler_.schedule(s.steps, h * w);
  return s.images.empty() ? full : img2img_schedule(full, s.strength).schedule;
}

pipeline::StepWork Pipeline::step_work(const pipeline::Settings& s) const {
  const auto [h, w] = token_grid(s);
  // The text rows encode() gives a branch: the prompt's tokens less the template prefix, at most
  // --max-sequence-length (without a tokenizer, as in the golden cases: that maximum).
  auto text_tokens = [&](const std::string& prompt) {
    if (!tokenizer_) return s.max_sequence_length;
    const int64_t prefix = template_prefix_tokens(*tokenizer_);
    const TokenBatch t = tokenize(*tokenizer_, {prompt}, kMaxPromptTokens + prefix);
    const int64_t real = t.attention_mask.sum().item<int64_t>();
    return std::min(std::max<int64_t>(real - prefix, 0), s.max_sequence_length);
  };
  std::vector<int64_t> lens = {text_tokens(s.prompt)};
  if (cfg_off_reason(s).empty()) lens.push_back(text_tokens(s.negative_prompt));
  return qwen_image::step_work(tcfg_, h * w, lens, s.batch);
}

pipeline::Latents Pipeline::predict(const pipeline::Latents& latents, float t,
                                    const pipeline::Conditioning& cond, int branch,
                                    const pipeline::Settings& s) const {
  const auto& c = static_cast<const Conditioning&>(cond);
  const auto [h, w] = token_grid(s);
  DITGEN_CHECK(transformer_, "internal: Qwen-Image's transformer is not loaded (deferred or released)");
  if (!c.rope.defined())
    c.rope = transformer_->rope(1, h, w, c.embeds.size(1));  // encoded before it was loaded
  TransformerInput in;
  in.hidden_states = latents[0];
  in.encoder_hidden_states = c.embeds;
  in.encoder_mask = c.mask;
  in.timestep = pipeline::model_timestep(t, latents[0].size(0), latents[0].scalar_type(), device_);
  in.frames = 1;
  in.height = h;
  in.width = w;
  in.rope = c.rope;
  const sched::Schedule steps = schedule(s);  // `t` is one of its timesteps: the modulation table's key
  in.schedule = &steps.timesteps;
  in.t = t;
  return {transformer_->forward(in, cache_.get(s.cache, ctx_, "Qwen-Image"), branch)};
}

pipeline::Latents Pipeline::guide(const pipeline::Latents& cond, const pipeline::Latents& uncond,
                                  const pipeline::Settings& s) const {
  // In the latents' dtype, as the reference: norms over the packed channels of each token.
  const at::Tensor& v = cond[0];
  at::Tensor comb = uncond[0] + (v - uncond[0]) * s.true_cfg_scale;
  at::Tensor ratio = at::linalg_vector_norm(v, 2, at::IntArrayRef{-1}, true) /
                     at::linalg_vector_norm(comb, 2, at::IntArrayRef{-1}, true);
  return {comb * ratio};
}

pipeline::Media Pipeline::decode(const pipeline::Latents& latents, const pipeline::Settings& s) const {
  const auto [h, w] = token_grid(s);
  // [B, h*w, 4z] -> [B, 4z, h, w] -> [B, z, 2h, 2w] -> one frame [B, z, 1, 2h, 2w]
  at::Tensor z = nn::unpatchify(nn::unpack_latents(latents[0], h, w)).unsqueeze(2);
  return {vae_->decode_to_image(z, parallel_vae_ ? &ctx_->world() : nullptr)};
}

}  // namespace ditgen::qwen_image
