// Golden checks of the LTX-2 video VAE against diffusers' AutoencoderKLLTX2Video: decode of de-normalised
// latents (fixtures models/ltx2_video_vae_*; raw output, not clamped), and the causal encoder's posterior
// mean (models/ltx2_video_vae_encode_*, not normalised).
#include "lib/io/checkpoint.h"
#include "lib/nn/weights.h"
#include "models/ltx2/verify.h"
#include "models/ltx2/video_vae.h"

namespace ditgen::ltx2 {

void verify_video_vae(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const double tol = opt.tolerance > 0 ? opt.tolerance : 1e-4;
  const VideoVaeConfig config = VideoVaeConfig::from_json(c.config(), c.file("config.json"));

  auto store = io::TensorStore::open_files({c.file("weights.safetensors")});
  auto source = std::make_shared<nn::CheckpointSource>(store, "", VideoVae::unread_keys());
  const VideoVae vae(config, nn::Weights(source, opt.dtype, opt.device));
  source->check_all_used();  // an unexpected tensor means the module tree is wrong

  const at::Tensor latents = c.tensor("in.latents");  // [B, C, F, H, W], already de-normalised
  const at::Tensor decoded = vae.decode(latents, opt.vae_ranks());
  verify::compare(report, "out.decoded", decoded, c.tensor("out.decoded"), tol);
  // VAE-P must give the one-process decode (fp32: 1e-5), not merely something near the reference.
  if (opt.vae_ranks())
    verify::compare(report, "out.decoded_vs_one_rank", decoded, vae.decode(latents),
                    opt.dtype == at::kFloat ? 1e-5 : tol);
}

void verify_video_vae_encode(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const double tol = opt.tolerance > 0 ? opt.tolerance : 1e-4;
  const VideoVaeConfig config = VideoVaeConfig::from_json(c.config(), c.file("config.json"));

  auto store = io::TensorStore::open_files({c.file("weights.safetensors")});
  auto source =
      std::make_shared<nn::CheckpointSource>(store, "", VideoVae::unread_keys(/*with_encoder=*/true));
  const VideoVae vae(config, nn::Weights(source, opt.dtype, opt.device), /*with_encoder=*/true);
  source->check_all_used();

  const at::Tensor video = c.tensor("in.video");  // [B, 3, F, H, W] in [-1, 1]
  const at::Tensor mean = vae.encode_mean(video, opt.vae_ranks());
  verify::compare(report, "out.encoded_mean", mean, c.tensor("out.encoded_mean"), tol);
  // VAE-P must give the one-process encode (fp32: 1e-5), not merely something near the reference.
  if (opt.vae_ranks())
    verify::compare(report, "out.encoded_mean_vs_one_rank", mean, vae.encode_mean(video),
                    opt.dtype == at::kFloat ? 1e-5 : tol);
}

}  // namespace ditgen::ltx2
