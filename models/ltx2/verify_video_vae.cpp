// Golden check of the LTX-2 video VAE (fixtures models/ltx2_video_vae_*): decode of de-normalised
// latents against diffusers' AutoencoderKLLTX2Video.decode (raw output, not clamped).
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

}  // namespace ditgen::ltx2
