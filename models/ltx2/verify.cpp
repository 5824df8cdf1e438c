// Golden checks of the LTX-2 transformer (models/ltx2_transformer_*), text connectors
// (models/ltx2_connectors_*) and pipeline (pipelines/ltx2_pipeline_*) against diffusers.
#include "lib/io/checkpoint.h"
#include "lib/nn/weights.h"
#include "lib/runtime/error.h"
#include "models/ltx2/connectors.h"
#include "models/ltx2/pipeline.h"
#include "models/ltx2/transformer.h"
#include "models/ltx2/verify.h"
#include "models/verify_lora.h"

namespace ditgen::ltx2 {

namespace {
std::shared_ptr<parallel::Context> context_of(const verify::CaseOptions& opt) {
  return opt.parallel ? opt.parallel : parallel::Context::single();
}
}  // namespace

namespace {
// The case's transformer from `source` under `ctx`, on the case's inputs: (video, audio).
std::pair<at::Tensor, at::Tensor> run_transformer(const verify::Case& c, const verify::CaseOptions& opt,
                                                  std::shared_ptr<nn::WeightSource> source,
                                                  std::shared_ptr<parallel::Context> ctx, verify::Report& report) {
  auto cfg = TransformerConfig::from_json(c.config(), c.file("config.json"));
  const auto streamer = opt.streamer();  // --offload
  Transformer model(cfg, nn::Weights(source, opt.dtype, opt.device), std::move(ctx), opt.fp8, streamer);
  source->check_all_used();

  TransformerInput in;
  in.hidden_states = c.tensor("in.hidden_states");
  in.audio_hidden_states = c.tensor("in.audio_hidden_states");
  in.encoder_hidden_states = c.tensor("in.encoder_hidden_states");
  in.audio_encoder_hidden_states = c.tensor("in.audio_encoder_hidden_states");
  if (c.has("in.encoder_attention_mask")) in.encoder_mask = c.tensor("in.encoder_attention_mask");
  in.timestep = c.tensor("in.timestep");
  if (c.has("in.audio_timestep")) in.audio_timestep = c.tensor("in.audio_timestep");
  in.frames = static_cast<int64_t>(c.scalar("num_frames"));
  in.height = static_cast<int64_t>(c.scalar("height"));
  in.width = static_cast<int64_t>(c.scalar("width"));
  in.fps = c.scalar("fps");
  DITGEN_CHECK(static_cast<int64_t>(c.scalar("audio_num_frames")) == in.audio_hidden_states.size(1),
               "case '{}': audio_num_frames disagrees with in.audio_hidden_states", c.dir());
  auto out = model.forward(in);
  verify::expect_streamed(report, "offload", streamer ? &streamer->stats() : nullptr);
  return {out.video, out.audio};
}
}  // namespace

void verify_transformer(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  auto source = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file("weights.safetensors")}));
  const auto [video, audio] = run_transformer(c, opt, source, context_of(opt), report);
  // FP8 (e4m3: 3 mantissa bits) in every block linear: a few percent relative error is its resolution.
  const double tol = opt.tolerance > 0 ? opt.tolerance : (opt.fp8 ? 0.08 : 1e-4);
  verify::compare(report, "out.sample", video, c.tensor("out.sample"), tol);
  verify::compare(report, "out.audio_sample", audio, c.tensor("out.audio_sample"), tol);
}

void verify_transformer_lora(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  verify_lora_case(c, opt, nn::LoraModel::Ltx2, [&](auto source, auto ctx) {
    auto [video, audio] = run_transformer(c, opt, source, ctx, report);
    return std::vector<std::pair<std::string, at::Tensor>>{{"sample", video}, {"audio_sample", audio}};
  }, report);
}

void verify_connectors(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  auto cfg = ConnectorsConfig::from_json(c.config(), c.file("config.json"));
  auto source = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file("weights.safetensors")}));
  Connectors model(cfg, nn::Weights(source, opt.dtype, opt.device));
  source->check_all_used();
  const auto out = model.forward(c.tensor("in.text_encoder_hidden_states"), c.tensor("in.attention_mask"));
  const double tol = opt.tolerance > 0 ? opt.tolerance : 1e-4;
  verify::compare(report, "out.video_embeds", out.video, c.tensor("out.video_embeds"), tol);
  verify::compare(report, "out.audio_embeds", out.audio, c.tensor("out.audio_embeds"), tol);
  verify::expect_equal(report, "out.attention_mask", at::equal(out.mask, c.tensor("out.attention_mask").to(at::kLong)));
}

void verify_pipeline(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const std::string where = c.file("config.json");
  Pipeline::Parts parts;
  std::map<std::string, nn::Weights> weights;
  std::vector<std::shared_ptr<nn::CheckpointSource>> sources;
  for (const char* name : {"transformer", "connectors", "vae", "audio_vae", "vocoder"})
    DITGEN_CHECK(c.config().contains(name), "{}: an LTX-2 pipeline case needs a '{}' section", where, name);
  parts.transformer = TransformerConfig::from_json(c.config()["transformer"], where + " transformer");
  parts.connectors = ConnectorsConfig::from_json(c.config()["connectors"], where + " connectors");
  parts.vae = VideoVaeConfig::from_json(c.config()["vae"], where + " vae");
  parts.audio_vae = AudioVaeConfig::from_json(c.config()["audio_vae"], where + " audio_vae");
  parts.vocoder = VocoderConfig::from_json(c.config()["vocoder"], where + " vocoder");
  parts.scheduler = sched::FlowMatchConfig::from_json(c.config().value("scheduler", nlohmann::json::object()),
                                                      where + " scheduler", scheduler_defaults());
  auto open = [&](const std::string& name, const std::vector<std::string>& unread) {
    auto s = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file(name + ".safetensors")}), "",
                                                    unread);
    sources.push_back(s);
    weights.emplace(name, nn::Weights(s, opt.dtype, opt.device));
  };
  open("transformer", {});
  open("connectors", {});
  // An image-to-video case carries its image as in.image_0 ([H, W, 3] uint8) and upstream's unpacked draws.
  const bool i2v = c.has("in.image_0");
  parts.image_encoder = i2v;
  open("vae", VideoVae::unread_keys(/*with_encoder=*/i2v));
  open("audio_vae", AudioVae::unread_keys());
  open("vocoder", {});
  const auto ctx = context_of(opt);
  const Pipeline pipe(parts, weights, ctx);
  for (const auto& s : sources) s->check_all_used();

  pipeline::Settings s;
  s.height = static_cast<int64_t>(c.scalar("height"));
  s.width = static_cast<int64_t>(c.scalar("width"));
  s.num_frames = static_cast<int64_t>(c.scalar("num_frames"));
  s.frame_rate = c.scalar("frame_rate");
  s.steps = static_cast<int64_t>(c.scalar("num_inference_steps"));
  s.guidance = c.scalar("guidance_scale");
  s.audio_guidance = c.scalar("audio_guidance_scale");
  // What this port runs is LTX-2.0 sampling: a case asking for STG, modality guidance or the rescale is
  // another algorithm, refused rather than compared.
  DITGEN_CHECK(
      c.scalar("stg_scale") == 0 && c.scalar("modality_scale") == 1 && c.scalar("guidance_rescale") == 0,
      "case '{}': only LTX-2.0 sampling (stg_scale 0, modality_scale 1, guidance_rescale 0) is implemented",
      c.dir());
  s.dtype = opt.dtype;
  s.device = opt.device;
  const double tol = opt.tolerance > 0 ? opt.tolerance : 1e-3;
  at::Tensor latents, audio_latents;  // packed, as the loop first sees them
  if (i2v) {
    s.images.push_back({c.file("io.safetensors") + ":in.image_0", "", c.tensor("in.image_0").to(at::kByte)});
    s.image_crf = static_cast<int64_t>(c.scalar("image_crf"));
    s.batch = c.tensor("in.noise").size(0);
    s.image_conditioning = pipe.encode_images(s);
    const pipeline::Latents init =
        pipe.initial_latents_from(s, c.tensor("in.noise"), c.tensor("in.audio_noise"));
    latents = init[0];
    audio_latents = init[1];
    verify::compare(report, "out.initial_latents", latents, c.tensor("out.initial_latents"), tol);
    verify::compare(report, "out.conditioning_mask", pipe.conditioning_mask(pipe.grid(s), s.batch),
                    c.tensor("out.conditioning_mask"), 0);
  } else {
    latents = c.tensor("in.latents").to(opt.device);
    audio_latents = c.tensor("in.audio_latents").to(opt.device);
    s.batch = latents.size(0);
  }
  const Grid g = pipe.grid(s);
  DITGEN_CHECK(latents.size(1) == g.frames * g.height * g.width && audio_latents.size(1) == g.audio,
               "case '{}': the initial latents {} / audio latents {} do not match {}x{}x{} at {} fps",
               c.dir(), io::shape_str(latents.sizes()), io::shape_str(audio_latents.sizes()), s.height,
               s.width, s.num_frames, s.frame_rate);
  pipeline::Branches branches;
  branches.cond = pipe.condition(c.tensor("in.prompt_embeds"), c.tensor("in.prompt_attention_mask"));
  if (pipe.cfg_off_reason(s).empty())
    branches.uncond = pipe.condition(c.tensor("in.negative_prompt_embeds"), c.tensor("in.negative_prompt_attention_mask"));
  pipeline::join_branches(pipe, branches, s, *ctx);  // as the generate command (and the reference) run them
  auto result = pipeline::denoise(pipe, s, branches, {latents, audio_latents}, *ctx);
  const pipeline::Media m = pipe.decode(result.latents, s);

  verify::compare(report, "out.sigmas", at::tensor(result.schedule.sigmas), c.tensor("out.sigmas"), 1e-6);
  verify::compare(report, "out.video", m.videos, c.tensor("out.video"), tol);
  verify::compare(report, "out.audio", m.audio, c.tensor("out.audio"), tol);
}

}  // namespace ditgen::ltx2
