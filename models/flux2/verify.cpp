#include "models/flux2/verify.h"

#include "lib/io/checkpoint.h"
#include "lib/nn/weights.h"
#include "lib/runtime/error.h"
#include "models/flux2/pipeline.h"
#include "models/flux2/transformer.h"
#include "models/verify_lora.h"

namespace ditgen::flux2 {

namespace {
std::shared_ptr<parallel::Context> context_of(const verify::CaseOptions& opt) {
  return opt.parallel ? opt.parallel : parallel::Context::single();
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
  in.timestep = c.tensor("in.timestep");
  in.guidance = c.has("in.guidance") ? c.tensor("in.guidance") : at::Tensor();
  in.img_ids = c.tensor("in.img_ids");
  in.txt_ids = c.tensor("in.txt_ids");
  const at::Tensor out = model.forward(in);
  verify::expect_streamed(report, "offload", streamer ? &streamer->stats() : nullptr);
  return out;
}
}  // namespace

void verify_transformer(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  auto source = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file("weights.safetensors")}));
  const at::Tensor out = run_transformer(c, opt, source, context_of(opt), report);
  // FP8 (e4m3: 3 mantissa bits) in every block linear: a few percent relative error is its resolution.
  const double tol = opt.tolerance > 0 ? opt.tolerance : (opt.fp8 ? 0.08 : 1e-4);
  verify::compare(report, "out.sample", out, c.tensor("out.sample"), tol);
}

void verify_transformer_lora(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  verify_lora_case(c, opt, nn::LoraModel::Flux2, [&](auto source, auto ctx) {
    return std::vector<std::pair<std::string, at::Tensor>>{{"sample", run_transformer(c, opt, source, ctx, report)}};
  }, report);
}

void verify_pipeline(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const std::string where = c.file("config.json");
  DITGEN_CHECK(c.config().contains("transformer") && c.config().contains("vae"),
               "{}: a pipeline case needs 'transformer' and 'vae' sections", where);
  auto tcfg = TransformerConfig::from_json(c.config()["transformer"], where + " transformer");
  auto vcfg = VaeConfig::from_json(c.config()["vae"], where + " vae");
  auto scfg = SchedulerConfig::from_json(c.config().value("scheduler", nlohmann::json::object()), where + " scheduler");
  auto tsrc = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file("transformer.safetensors")}));
  // An editing case carries its reference images as in.image_0, in.image_1, ... ([H, W, 3] uint8).
  std::vector<io::InputImage> images;
  while (c.has(fmt::format("in.image_{}", images.size()))) {
    const std::string key = fmt::format("in.image_{}", images.size());
    images.push_back({c.file("io.safetensors") + ":" + key, "", c.tensor(key).to(at::kByte)});
  }
  const bool edit = !images.empty();
  auto vsrc = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file("vae.safetensors")}), "",
                                                     Vae::unread_keys(/*with_encoder=*/edit));
  Pipeline pipe(tcfg, nn::Weights(tsrc, opt.dtype, opt.device), vcfg, nn::Weights(vsrc, opt.dtype, opt.device), scfg,
                context_of(opt), /*with_encoder=*/edit);
  tsrc->check_all_used();
  vsrc->check_all_used();

  const at::Tensor noise = c.tensor("in.latents");  // [B, C_p, h, w] patchified
  pipeline::Settings s;
  s.steps = static_cast<int64_t>(c.scalar("num_inference_steps"));
  s.guidance = c.scalar("guidance_scale");
  s.batch = noise.size(0);
  s.height = noise.size(2) * pipe.pixel_multiple();
  s.width = noise.size(3) * pipe.pixel_multiple();
  s.dtype = opt.dtype;
  s.device = opt.device;
  s.images = images;
  const double tol = opt.tolerance > 0 ? opt.tolerance : 1e-3;
  if (edit) {
    s.image_conditioning = pipe.encode_images(s);
    const auto& refs = static_cast<const ReferenceImages&>(*s.image_conditioning);
    verify::compare(report, "out.image_latents", refs.latents, c.tensor("out.image_latents"), tol);
    verify::compare(report, "out.image_latent_ids", refs.ids.to(at::kFloat).unsqueeze(0),
                    c.tensor("out.image_latent_ids"), 0);
  }
  pipeline::Branches branches;
  branches.cond = pipe.condition(c.tensor("in.prompt_embeds"), s);
  auto result = pipeline::denoise(pipe, s, branches, {nn::pack_latents(noise.to(opt.device, opt.dtype))},
                                  *context_of(opt));
  verify::compare(report, "out.sigmas", at::tensor(result.schedule.sigmas), c.tensor("out.sigmas"), 1e-6);
  if (c.has("out.timesteps"))
    verify::compare(report, "out.timesteps", at::tensor(result.schedule.timesteps), c.tensor("out.timesteps"), 1e-6);
  verify::compare(report, "out.final_latents", result.latents[0], c.tensor("out.final_latents"), tol);
  verify::compare(report, "out.image", pipe.decode(result.latents, s).images, c.tensor("out.image"), tol);
}

}  // namespace ditgen::flux2
