// Golden checks of the Qwen-Image transformer (models/qwenimage_transformer_*) and pipeline
// (pipelines/qwenimage_pipeline_*) against diffusers.
#include "lib/io/checkpoint.h"
#include "lib/nn/weights.h"
#include "lib/runtime/error.h"
#include "models/qwen_image/pipeline.h"
#include "models/qwen_image/transformer.h"
#include "models/qwen_image/verify.h"
#include "models/verify_lora.h"

namespace ditgen::qwen_image {

namespace {
std::shared_ptr<parallel::Context> context_of(const verify::CaseOptions& opt) {
  return opt.parallel ? opt.parallel : parallel::Context::single();
}

// case.json "img_shapes": [[frames, h, w], ...]; the model uses the first (one size per batch, §2).
std::vector<int64_t> img_shape(const verify::Case& c) {
  const auto& sc = c.case_json().value("scalars", nlohmann::json::object());
  DITGEN_CHECK(sc.contains("img_shapes") && sc["img_shapes"].is_array() && !sc["img_shapes"].empty(),
               "case '{}': case.json needs scalars.img_shapes [[frames, h, w]]", c.dir());
  auto s = sc["img_shapes"][0].get<std::vector<int64_t>>();
  DITGEN_CHECK(s.size() == 3, "case '{}': img_shapes[0] must be [frames, h, w]", c.dir());
  return s;
}
}  // namespace

namespace {
// The case's transformer from `source` under `ctx`, on the case's inputs.
at::Tensor run_transformer(const verify::Case& c, const verify::CaseOptions& opt,
                           std::shared_ptr<nn::WeightSource> source, std::shared_ptr<parallel::Context> ctx,
                           verify::Report& report) {
  auto cfg = TransformerConfig::from_json(c.config(), c.file("config.json"));
  const auto streamer = opt.streamer();  // --offload
  Transformer model(cfg, nn::Weights(source, opt.dtype, opt.device), std::move(ctx), opt.fp8, streamer);
  source->check_all_used();

  TransformerInput in;
  in.hidden_states = c.tensor("in.hidden_states");
  in.encoder_hidden_states = c.tensor("in.encoder_hidden_states");
  if (c.has("in.encoder_hidden_states_mask")) in.encoder_mask = c.tensor("in.encoder_hidden_states_mask");
  in.timestep = c.tensor("in.timestep");
  const auto shape = img_shape(c);
  in.frames = shape[0];
  in.height = shape[1];
  in.width = shape[2];
  const at::Tensor out = model.forward(in);
  verify::expect_streamed(report, "offload", streamer ? &streamer->stats() : nullptr);
  return out;
}
}  // namespace

void verify_transformer(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  auto source = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file("weights.safetensors")}));
  // FP8 (e4m3: 3 mantissa bits) in every block linear: a few percent relative error is its resolution.
  verify::compare(report, "out.sample", run_transformer(c, opt, source, context_of(opt), report), c.tensor("out.sample"),
                  opt.tolerance > 0 ? opt.tolerance : (opt.fp8 ? 0.08 : 1e-4));
}

void verify_transformer_lora(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  verify_lora_case(c, opt, nn::LoraModel::QwenImage, [&](auto source, auto ctx) {
    return std::vector<std::pair<std::string, at::Tensor>>{{"sample", run_transformer(c, opt, source, ctx, report)}};
  }, report);
}

void verify_pipeline(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const std::string where = c.file("config.json");
  DITGEN_CHECK(c.config().contains("transformer") && c.config().contains("vae"),
               "{}: a pipeline case needs 'transformer' and 'vae' sections", where);
  auto tcfg = TransformerConfig::from_json(c.config()["transformer"], where + " transformer");
  auto vcfg = VaeConfig::from_json(c.config()["vae"], where + " vae");
  auto scfg = sched::FlowMatchConfig::from_json(c.config().value("scheduler", nlohmann::json::object()), where + " scheduler",
                                               scheduler_defaults());
  auto tsrc = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file("transformer.safetensors")}));
  // An image-to-image case carries its image as in.image_0 ([H, W, 3] uint8) and upstream's two draws.
  const bool img2img = c.has("in.image_0");
  auto vsrc = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file("vae.safetensors")}),
                                                     "", Vae::unread_keys(/*with_encoder=*/img2img));
  const auto ctx = context_of(opt);
  Pipeline pipe(tcfg, nn::Weights(tsrc, opt.dtype, opt.device), vcfg,
                nn::Weights(vsrc, opt.dtype, opt.device), scfg, ctx, /*with_encoder=*/img2img);
  tsrc->check_all_used();
  vsrc->check_all_used();

  pipeline::Settings s;
  s.height = static_cast<int64_t>(c.scalar("height"));
  s.width = static_cast<int64_t>(c.scalar("width"));
  s.steps = static_cast<int64_t>(c.scalar("num_inference_steps"));
  s.true_cfg_scale = c.scalar("true_cfg_scale");
  s.has_negative_prompt = c.has("in.negative_prompt_embeds");
  s.dtype = opt.dtype;
  s.device = opt.device;
  const double tol = opt.tolerance > 0 ? opt.tolerance : 1e-3;
  at::Tensor latents;  // [B, (H/2sf)(W/2sf), 4 z_dim] packed, as the loop first sees them
  if (img2img) {
    s.images.push_back({c.file("io.safetensors") + ":in.image_0", "", c.tensor("in.image_0").to(at::kByte)});
    s.strength = c.scalar("strength");
    s.batch = c.tensor("in.noise").size(0);
    s.image_conditioning = pipe.encode_images(s);
    latents = pipe.img2img_latents(s, c.tensor("in.image_latent_noise").to(opt.dtype),
                                   c.tensor("in.noise").to(opt.dtype));
    verify::compare(report, "out.initial_latents", latents, c.tensor("out.initial_latents"), tol);
  } else {
    latents = c.tensor("in.latents").to(opt.device, opt.dtype);
    s.batch = latents.size(0);
  }
  auto mask = [&](const std::string& key) { return c.has(key) ? c.tensor(key) : at::Tensor(); };
  pipeline::Branches branches;
  branches.cond = pipe.condition(c.tensor("in.prompt_embeds"), mask("in.prompt_embeds_mask"), s);
  if (pipe.cfg_off_reason(s).empty())
    branches.uncond = pipe.condition(c.tensor("in.negative_prompt_embeds"), mask("in.negative_prompt_embeds_mask"), s);
  auto result = pipeline::denoise(pipe, s, branches, {latents}, *ctx);

  // The case holds the whole schedule; image-to-image runs its last steps (the strength rule).
  auto kept = [](const at::Tensor& full, size_t n) {
    const int64_t k = std::min(static_cast<int64_t>(n), full.size(0));
    return full.narrow(0, full.size(0) - k, k);
  };
  verify::compare(report, "out.sigmas", at::tensor(result.schedule.sigmas),
                  kept(c.tensor("out.sigmas"), result.schedule.sigmas.size()), 1e-6);
  verify::compare(report, "out.timesteps", at::tensor(result.schedule.timesteps),
                  kept(c.tensor("out.timesteps"), result.schedule.timesteps.size()), 1e-6);
  verify::compare(report, "out.final_latents", result.latents[0], c.tensor("out.final_latents"), tol);
  verify::compare(report, "out.image", pipe.decode(result.latents, s).images, c.tensor("out.image"), tol);
}

}  // namespace ditgen::qwen_image
