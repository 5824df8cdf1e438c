// Golden checks of the LTX-2 video VAE against diffusers' AutoencoderKLLTX2Video: decode of de-normalised
// latents (fixtures models/ltx2_video_vae_*; raw output, not clamped), and the causal encoder's posterior
// mean (models/ltx2_video_vae_encode_*, not normalised).
#include "lib/verify/module.h"
#include "models/ltx2/verify.h"
#include "models/ltx2/vae.h"

namespace ditgen::ltx2 {

namespace {
VideoVae load(const verify::Case& c, const verify::CaseOptions& opt, bool with_encoder) {
  return verify::load_case_module<VideoVae>(c, opt,
                                            VideoVaeConfig::from_json(c.config(), c.file("config.json")),
                                            VideoVae::unread_keys(with_encoder), with_encoder);
}
}  // namespace

void verify_vae(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const VideoVae vae = load(c, opt, /*with_encoder=*/false);
  const at::Tensor latents = c.tensor("in.latents");  // [B, C, F, H, W], already de-normalised
  verify::compare_with_one_rank(
      report, c, opt, "out.decoded", vae.decode(latents, opt.vae_ranks()),
      [&] { return vae.decode(latents); }, verify::tolerance(opt, 1e-4));
}

void verify_vae_encode(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const VideoVae vae = load(c, opt, /*with_encoder=*/true);
  const at::Tensor video = c.tensor("in.video");  // [B, 3, F, H, W] in [-1, 1]
  verify::compare_with_one_rank(
      report, c, opt, "out.encoded_mean", vae.encode_mean(video, opt.vae_ranks()),
      [&] { return vae.encode_mean(video); }, verify::tolerance(opt, 1e-4));
}

}  // namespace ditgen::ltx2
