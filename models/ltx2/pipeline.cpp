#include "models/ltx2/pipeline.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "lib/io/checkpoint.h"
#include "lib/io/image_read.h"
#include "lib/io/json.h"
#include "lib/io/video.h"
#include "lib/pipeline/model_files.h"
#include "lib/runtime/embedded_configs.h"
#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"
#include "lib/runtime/trace.h"
#include "lib/text/tiny_tokenizer.h"
#include "models/ltx2/image_latents.h"
#include "models/ltx2/prompt.h"
#include "models/ltx2/work.h"

namespace ditgen::ltx2 {

sched::FlowMatchConfig scheduler_defaults() {
  sched::FlowMatchConfig c;
  c.base_shift = 0.95;
  c.max_shift = 2.05;
  c.base_image_seq_len = 1024;
  c.max_image_seq_len = 4096;
  c.shift_terminal = 0.1;
  return c;
}

nlohmann::json tiny_tokenizer_json() {
  nlohmann::json j = text::tiny_qwen_tokenizer_json();
  int64_t next = 0;
  for (const auto& t : j["added_tokens"]) next = std::max(next, t["id"].get<int64_t>() + 1);
  for (const auto& [k, v] : j["model"]["vocab"].items()) next = std::max(next, v.get<int64_t>() + 1);
  const int64_t bos = next + 2;
  for (const char* t : {"<pad>", "<eos>", "<bos>"})
    j["added_tokens"].push_back({{"id", next++},
                                 {"content", t},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", false},
                                 {"special", true}});
  const nlohmann::json bos_piece = {{"SpecialToken", {{"id", "<bos>"}, {"type_id", 0}}}};
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {bos_piece, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair",
       {bos_piece,
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        bos_piece,
        {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
      {"special_tokens", {{"<bos>", {{"id", "<bos>"}, {"ids", {bos}}, {"tokens", {"<bos>"}}}}}}};
  return j;
}

namespace {

std::shared_ptr<text::Tokenizer> tiny_tokenizer() {
  static const std::shared_ptr<text::Tokenizer> tok =
      text::Tokenizer::from_json(tiny_tokenizer_json(), "the built-in tiny LTX-2 tokenizer");
  return tok;
}

}  // namespace

// ---- loading ------------------------------------------------------------------------------------

Pipeline::Pipeline(const Parts& parts, const std::map<std::string, nn::Weights>& weights,
                   std::shared_ptr<parallel::Context> ctx)
    : ModelBase(/*separate_cfg_cache=*/false),
      ctx_(std::move(ctx)),
      dtype_(weights.at("transformer").dtype()),
      device_(weights.at("transformer").device()) {
  name_ = "ltx2";
  build(parts, weights);
  load_deferred();
}

void Pipeline::build(const Parts& p, const std::map<std::string, nn::Weights>& w) {
  scheduler_ = p.scheduler;
  // The components must fit together; a mismatch would otherwise surface as a shape error deep inside.
  DITGEN_CHECK(p.transformer.in_channels == p.vae.latent_channels &&
                   p.transformer.out_channels == p.vae.latent_channels,
               "the transformer takes {} and predicts {} video channels, but the VAE's latent_channels is {}",
               p.transformer.in_channels, p.transformer.out_channels, p.vae.latent_channels);
  DITGEN_CHECK(
      p.transformer.audio_in_channels == p.audio_vae.packed_features() &&
          p.transformer.audio_out_channels == p.audio_vae.packed_features(),
      "the transformer takes {} and predicts {} audio features, but the audio VAE packs latent_channels {} x "
      "mel_bins/4 {} = {}",
      p.transformer.audio_in_channels, p.transformer.audio_out_channels, p.audio_vae.latent_channels,
      p.audio_vae.latent_mel_bins(), p.audio_vae.packed_features());
  DITGEN_CHECK(p.transformer.caption_channels == p.connectors.caption_channels,
               "the transformer's caption_channels {} differs from the connectors' {}",
               p.transformer.caption_channels, p.connectors.caption_channels);
  DITGEN_CHECK(p.vocoder.in_channels == p.audio_vae.output_channels * p.audio_vae.mel_bins,
               "the vocoder takes {} channels, but the audio VAE decodes {} channels x {} mel bins",
               p.vocoder.in_channels, p.audio_vae.output_channels, p.audio_vae.mel_bins);
  connectors_ = std::make_unique<Connectors>(p.connectors, w.at("connectors"));
  // Built by load_deferred(): at once, or after the prompts are encoded (the memory plan).
  tcfg_ = p.transformer;
  load_transformer_ = [this, tcfg = p.transformer, tw = w.at("transformer")] {
    transformer_ = std::make_unique<Transformer>(tcfg, tw, ctx_, fp8_, offload_streamer("transformer", device_));
  };
  video_vae_ = std::make_unique<VideoVae>(p.vae, w.at("vae"), p.image_encoder);
  DITGEN_CHECK(
      !p.image_encoder || p.vae.encoder_spatial_ratio() == p.vae.spatial_ratio(),
      "the video VAE's encoder shrinks images {}x but its decoder enlarges latents {}x: image-to-video "
      "needs both equal",
      p.vae.encoder_spatial_ratio(), p.vae.spatial_ratio());
  audio_vae_ = std::make_unique<AudioVae>(p.audio_vae, w.at("audio_vae"));
  vocoder_ = std::make_unique<Vocoder>(p.vocoder, w.at("vocoder"));
}

Pipeline::Pipeline(const LoadOptions& opt, std::shared_ptr<parallel::Context> ctx)
    : ModelBase(/*separate_cfg_cache=*/false),
      ctx_(std::move(ctx)),
      dtype_(opt.dtype),
      device_(opt.device),
      parallel_vae_(opt.parallel_vae),
      fp8_(opt.fp8) {
  offload_ = opt.offload;
  const pipeline::ModelFiles files(opt, identity());
  name_ = files.name();
  defaults_ = files.defaults();

  // Each component's config (file or preset section).
  std::map<std::string, pipeline::ComponentConfig> cfg;
  for (const std::string name : {"transformer", "connectors", "vae", "audio_vae", "vocoder", "text_encoder"})
    cfg[name] = files.config(name);
  const auto sc = files.scheduler();
  scheduler_ = sched::FlowMatchConfig::from_json(sc.json, sc.where, scheduler_defaults());
  tokenizer_ = files.tokenizer(tiny_tokenizer);
  if (!files.from_folder() && !cfg["text_encoder"].json.contains("vocab_size"))
    cfg["text_encoder"].json["vocab_size"] = tokenizer_->vocab_size();

  Parts parts;
  parts.transformer = TransformerConfig::from_json(cfg["transformer"].json, cfg["transformer"].where);
  parts.connectors = ConnectorsConfig::from_json(cfg["connectors"].json, cfg["connectors"].where);
  parts.vae = VideoVaeConfig::from_json(cfg["vae"].json, cfg["vae"].where);
  parts.audio_vae = AudioVaeConfig::from_json(cfg["audio_vae"].json, cfg["audio_vae"].where);
  parts.vocoder = VocoderConfig::from_json(cfg["vocoder"].json, cfg["vocoder"].where);
  parts.scheduler = scheduler_;
  parts.image_encoder = opt.image_encoder;
  // Mel frames per second times the vocoder's upsampling is the waveform's rate: a mismatch would give a
  // sound track of the wrong length (the golden cases' test configs have one, so this is checked here).
  const double mel_rate =
      static_cast<double>(parts.audio_vae.sample_rate) / static_cast<double>(parts.audio_vae.mel_hop_length);
  DITGEN_CHECK(
      std::abs(mel_rate * static_cast<double>(parts.vocoder.upsample_factor()) -
               static_cast<double>(parts.vocoder.output_sampling_rate)) < 1e-6,
      "the audio VAE makes {} mel frames per second and the vocoder upsamples them {}x, which is not its "
      "output_sampling_rate {} Hz",
      mel_rate, parts.vocoder.upsample_factor(), parts.vocoder.output_sampling_rate);

  const auto& te = cfg["text_encoder"];
  te_json_ = te.json;
  const auto te_cfg = llm::DecoderConfig::from_json(te.json, te.where, llm::DecoderFamily::Gemma3);
  DITGEN_CHECK(te_cfg.family == llm::DecoderFamily::Gemma3,
               "{}: LTX-2's text encoder is a Gemma 3 text model, but the config describes a {} model",
               te.where, llm::family_name(te_cfg.family));
  DITGEN_CHECK(
      te_cfg.hidden_size == parts.connectors.caption_channels &&
          te_cfg.num_hidden_layers + 1 == parts.connectors.text_proj_in_factor,
      "the text encoder ({}) has hidden_size {} and {} layers, but the connectors take caption_channels {} x "
      "text_proj_in_factor {} (hidden_size x (layers + 1))",
      te.where, te_cfg.hidden_size, te_cfg.num_hidden_layers, parts.connectors.caption_channels,
      parts.connectors.text_proj_in_factor);
  DITGEN_CHECK(tokenizer_->vocab_size() <= te_cfg.vocab_size,
               "the tokenizer has {} ids but the text encoder's vocab_size is {} ({})",
               tokenizer_->vocab_size(), te_cfg.vocab_size, te.where);

  // Each component's tensors.
  std::map<std::string, std::shared_ptr<nn::WeightSource>> src;
  src["transformer"] = files.weights("transformer", {}, "load transformer");
  src["connectors"] = files.weights("connectors");
  src["vae"] = files.weights("vae", VideoVae::unread_keys(/*with_encoder=*/opt.image_encoder));
  src["audio_vae"] = files.weights("audio_vae", AudioVae::unread_keys());
  src["vocoder"] = files.weights("vocoder");
  src["text_encoder"] = files.weights_via(
      "text_encoder",
      [&](std::shared_ptr<io::TensorStore> store) {
        return llm::open_decoder_source(store, te_cfg, te_cfg.num_hidden_layers);
      },
      "load text encoder");

  std::map<std::string, nn::Weights> weights;
  for (const auto& [name, s] : src) weights.emplace(name, nn::Weights(s, dtype_, device_));
  build(parts, weights);
  text_encoder_ = llm::load_decoder(te_cfg, weights.at("text_encoder"), te_cfg.num_hidden_layers, ctx_,
                                    opt.parallel_text, offload_streamer("text_encoder", device_));
  for (const auto& [name, s] : src) {
    if (name == "transformer") continue;  // checked once read
    s->check_all_used();
    bytes_read_[name] = s->bytes_read();
  }
  load_transformer_ = [this, build = std::move(load_transformer_), tsrc = src.at("transformer")] {
    build();
    tsrc->check_all_used();
    bytes_read_["transformer"] = tsrc->bytes_read();
  };
  bytes_read_["transformer"] = 0;  // until it is read (now, or by load_deferred)
  if (!opt.defer_transformer) load_deferred();
}

void Pipeline::release(pipeline::Component c) {
  if (c == pipeline::Component::TextEncoder) text_encoder_.reset();
  if (c == pipeline::Component::Transformer) transformer_.reset();
}

// ---- settings -----------------------------------------------------------------------------------

Grid Pipeline::grid(const pipeline::Settings& s) const {
  Grid g;
  const int64_t sr = video_vae_->spatial_ratio(), tr = video_vae_->temporal_ratio();
  g.frames = (s.num_frames - 1) / tr + 1;
  g.height = s.height / sr;
  g.width = s.width / sr;
  g.audio = audio_vae_->latent_length(s.num_frames, s.frame_rate);
  return g;
}

void Pipeline::check(const pipeline::Settings& s) const {
  if (s.cache.enabled) s.cache.validate(s.steps);
  const int64_t tr = video_vae_->temporal_ratio();
  const int64_t lo = (s.num_frames - 1) / tr * tr + 1;
  DITGEN_CHECK(
      (s.num_frames - 1) % tr == 0,
      "--num-frames {} is not 1 + a multiple of {} (the VAE's frames per latent frame); use {} or {}",
      s.num_frames, tr, lo, lo + tr);
  DITGEN_CHECK(s.frame_rate > 0 && std::isfinite(s.frame_rate),
               "--frame-rate must be a positive number, got {}", s.frame_rate);
  for (const auto* b : {&connectors_->config().video, &connectors_->config().audio})
    DITGEN_CHECK(
        b->registers == 0 || s.max_sequence_length % b->registers == 0,
        "--max-sequence-length {} is not a multiple of {} (the text connectors' learnable registers)",
        s.max_sequence_length, b->registers);
  DITGEN_CHECK(grid(s).audio >= 1, "{} frames at {} fps are too short for one audio latent row", s.num_frames,
               s.frame_rate);
  DITGEN_CHECK(
      s.images.empty() || s.image_crf == 0 || io::mp4_supported(),
      "--image-crf {} re-encodes the image as an H.264 frame, but this ditgen was built without FFmpeg's "
      "libraries (-DDITGEN_FFMPEG=OFF): pass --image-crf 0 to use the image as is, or rebuild after "
      "scripts/setup.sh",
      s.image_crf);
}

std::string Pipeline::cfg_off_reason(const pipeline::Settings& s) const {
  if (s.guidance <= 1 && s.audio_guidance <= 1)
    return fmt::format("--guidance {} and --audio-guidance {} are not above 1", s.guidance, s.audio_guidance);
  return "";
}

nlohmann::json Pipeline::report_settings(const pipeline::Settings& s) const {
  const Grid g = grid(s);
  nlohmann::json j = {{"guidance", s.guidance},
                      {"audio_guidance", s.audio_guidance},
                      {"cfg", cfg_off_reason(s).empty()},
                      {"video_tokens", g.frames * g.height * g.width},
                      {"audio_tokens", g.audio}};
  j["negative_prompt"] = s.has_negative_prompt ? nlohmann::json(s.negative_prompt) : nlohmann::json();
  if (!s.images.empty()) j["image_crf"] = s.image_crf;
  return j;
}

// ---- stages -------------------------------------------------------------------------------------

std::shared_ptr<Conditioning> Pipeline::condition(const at::Tensor& states, const at::Tensor& mask) const {
  const auto out = connectors_->forward(states.to(device_, dtype_), mask.to(device_, at::kLong));
  auto c = std::make_shared<Conditioning>();
  c->video = out.video;
  c->audio = out.audio;
  if (!out.mask.ne(0).all().item<bool>()) c->mask = out.mask;  // all ones (the registers): no mask
  return c;
}

std::shared_ptr<pipeline::Conditioning> Pipeline::encode(const std::vector<std::string>& prompts,
                                                         const pipeline::Settings& s) const {
  DITGEN_CHECK(text_encoder_ && tokenizer_, "this pipeline was loaded without its text encoder");
  const PromptStates p = encode_prompts(*tokenizer_, *text_encoder_, prompts, s.max_sequence_length);
  runtime::trace("prompt_states", p.states);  // the first branch encoded: the conditional one
  return condition(p.states, p.mask);
}

std::shared_ptr<const pipeline::Conditioning> Pipeline::encode_images(const pipeline::Settings& s) const {
  DITGEN_CHECK(video_vae_->has_encoder(), "internal: LTX-2's video VAE was loaded without its encoder");
  at::Tensor px = io::resize_image(s.images.at(0).pixels, s.height, s.width);  // [H, W, 3] uint8
  if (s.image_crf > 0) px = io::h264_roundtrip(px, static_cast<int>(s.image_crf));
  const at::Tensor x =
      px.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).div(255).mul(2).sub(1);  // [1, 3, H, W]
  auto c = std::make_shared<FirstFrameImage>();
  c->latent =
      encode_first_frame(*video_vae_, x.to(device_, dtype_), parallel_vae_ ? &ctx_->world() : nullptr);
  runtime::trace("image_latent", c->latent);
  return c;
}

pipeline::Latents Pipeline::initial_latents(const pipeline::Settings& s) const {
  const Grid g = grid(s);
  const int64_t c = video_vae_->config().latent_channels;
  const auto& a = audio_vae_->config();
  at::Generator gen = at::detail::createCPUGenerator(s.seed);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor video = at::randn({s.batch, c, g.frames, g.height, g.width}, gen, f32);  // drawn first
  const at::Tensor audio = at::randn({s.batch, a.latent_channels, g.audio, a.latent_mel_bins()}, gen, f32);
  return initial_latents_from(s, video, audio);
}

pipeline::Latents Pipeline::initial_latents_from(const pipeline::Settings& s, const at::Tensor& video_noise,
                                                 const at::Tensor& audio_noise) const {
  at::Tensor video;  // [B, C, F, H, W] -> [B, F*H*W, C] (tokens f, h, w)
  if (s.image_conditioning) {
    const auto* image = dynamic_cast<const FirstFrameImage*>(s.image_conditioning.get());
    DITGEN_CHECK(image, "internal: LTX-2 image-to-video without the encoded image");
    video = image_to_video_latents(*video_vae_, image->latent, video_noise.to(device_)).latents;
  } else {
    video = video_noise.permute({0, 2, 3, 4, 1}).flatten(1, 3).to(device_);
  }
  return {video, audio_vae_->pack(audio_noise).to(device_)};  // audio [B, Ca, L, M'] -> [B, L, Ca*M']
}

at::Tensor Pipeline::conditioning_mask(const Grid& g, int64_t batch) const {
  at::Tensor mask = at::zeros({batch, g.frames * g.height * g.width},
                              at::TensorOptions().dtype(at::kFloat).device(device_));
  mask.narrow(1, 0, g.height * g.width).fill_(1.0);
  return mask;
}

sched::Schedule Pipeline::schedule(const pipeline::Settings& s) const {
  const Grid g = grid(s);
  return scheduler_.schedule(s.steps, g.frames * g.height * g.width);
}

pipeline::StepWork Pipeline::step_work(const pipeline::Settings& s) const {
  const Grid g = grid(s);
  const int branches = cfg_off_reason(s).empty() ? 2 : 1;
  return ltx2::step_work(tcfg_, g.frames * g.height * g.width, g.audio, s.max_sequence_length,
                         s.joint_cfg ? 2 * s.batch : s.batch, s.joint_cfg ? 1 : branches,
                         /*text_keys_per_step=*/offload_);
}

pipeline::Latents Pipeline::predict(const pipeline::Latents& latents, float t,
                                    const pipeline::Conditioning& cond, int branch,
                                    const pipeline::Settings& s) const {
  const auto& c = static_cast<const Conditioning&>(cond);
  const Grid g = grid(s);
  TransformerInput in;
  in.hidden_states = latents[0].to(dtype_);
  in.audio_hidden_states = latents[1].to(dtype_);
  in.encoder_hidden_states = c.video;
  in.audio_encoder_hidden_states = c.audio;
  in.encoder_mask = c.mask;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device_);
  const int64_t b = latents[0].size(0);
  in.timestep = at::full({b}, t, f32);
  at::Tensor clean;  // image-to-video: [B, Nv, 1] true on frame 0's tokens (the conditioning mask)
  if (s.image_conditioning) {
    const at::Tensor mask = conditioning_mask(g, b);
    in.audio_timestep = in.timestep;
    in.timestep = in.timestep.unsqueeze(1) * (1 - mask);  // [B, Nv]: 0 on the clean frame
    clean = mask.unsqueeze(-1).to(at::kBool);
  }
  in.frames = g.frames;
  in.height = g.height;
  in.width = g.width;
  in.fps = s.frame_rate;
  DITGEN_CHECK(transformer_, "internal: LTX-2's transformer is not loaded (deferred or released)");
  const auto out = transformer_->forward(in, cache_.get(s.cache, ctx_, "LTX-2"), branch);
  at::Tensor video = out.video.to(at::kFloat);                 // the loop and the guidance run in fp32
  if (clean.defined()) video = video.masked_fill(clean, 0.0);  // the step keeps frame 0
  return {video, out.audio.to(at::kFloat)};
}

pipeline::Latents Pipeline::guide(const pipeline::Latents& cond, const pipeline::Latents& uncond,
                                  const pipeline::Settings& s) const {
  return {uncond[0] + (cond[0] - uncond[0]) * s.guidance,
          uncond[1] + (cond[1] - uncond[1]) * s.audio_guidance};
}

std::shared_ptr<pipeline::Conditioning> Pipeline::join_branches(const pipeline::Conditioning& cond,
                                                                const pipeline::Conditioning& uncond,
                                                                const pipeline::Settings&) const {
  const auto& c = static_cast<const Conditioning&>(cond);
  const auto& u = static_cast<const Conditioning&>(uncond);
  if (offload_ || c.video.sizes() != u.video.sizes() || c.audio.sizes() != u.audio.sizes()) return nullptr;
  auto both = std::make_shared<Conditioning>();
  both->video = at::cat({c.video, u.video}, 0);
  both->audio = at::cat({c.audio, u.audio}, 0);
  if (c.mask.defined() || u.mask.defined()) {  // an undefined mask: every row real
    auto rows = [&](const at::Tensor& m) {
      return m.defined() ? m : at::ones(c.video.sizes().slice(0, 2), c.video.options().dtype(at::kLong));
    };
    both->mask = at::cat({rows(c.mask), rows(u.mask)}, 0);
  }
  return both;
}

pipeline::Media Pipeline::decode(const pipeline::Latents& latents, const pipeline::Settings& s) const {
  const Grid g = grid(s);
  const int64_t b = latents[0].size(0), c = latents[0].size(2);
  // [B, F*H*W, C] -> [B, C, F, H, W] in the VAE dtype, de-normalised and decoded to [B, F_px, 3, H, W].
  const at::Tensor z =
      latents[0].view({b, g.frames, g.height, g.width, c}).permute({0, 4, 1, 2, 3}).to(dtype_);
  pipeline::Media m;
  runtime::Stopwatch sw(device_);
  m.videos = video_vae_->decode_to_frames(z, parallel_vae_ ? &ctx_->world() : nullptr).to(at::kFloat);
  m.decode_seconds.emplace_back("video_vae", sw.seconds());
  sw.restart();
  // Audio: de-normalised on the packed features (fp32), unpacked, decoded to a mel spectrogram, then the
  // vocoder's waveform [B, 2, samples].
  const at::Tensor za =
      audio_vae_->unpack(audio_vae_->denormalize_packed(latents[1].to(at::kFloat))).to(dtype_);
  m.audio = vocoder_->forward(audio_vae_->decode(za)).to(at::kFloat);
  m.decode_seconds.emplace_back("audio_vae_vocoder", sw.seconds());
  m.fps = s.frame_rate;
  m.sample_rate = static_cast<int>(vocoder_->sample_rate());
  return m;
}

}  // namespace ditgen::ltx2
