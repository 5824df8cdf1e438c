// Golden checks of the Qwen-Image VAE against diffusers' AutoencoderKLQwenImage: decode of one
// de-normalised latent frame (fixtures models/qwenimage_vae_*), and the encoder's latent distribution of
// one frame (models/qwenimage_vae_encode_*).
#include "lib/verify/module.h"
#include "models/qwen_image/vae.h"
#include "models/qwen_image/verify.h"

namespace ditgen::qwen_image {

void verify_vae(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const Vae vae = verify::load_case_module<Vae>(
      c, opt, VaeConfig::from_json(c.config(), c.file("config.json")), Vae::unread_keys());

  const at::Tensor latents = c.tensor("in.latents");  // [B, z_dim, 1, h, w], already de-normalised
  verify::compare_with_one_rank(
      report, c, opt, "out.decoded", vae.decode(latents, opt.vae_ranks()),
      [&] { return vae.decode(latents); }, verify::tolerance(opt, 1e-4));
}

void verify_vae_encode(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const double tol = verify::tolerance(opt, 1e-4);
  const Vae vae =
      verify::load_case_module<Vae>(c, opt, VaeConfig::from_json(c.config(), c.file("config.json")),
                                    Vae::unread_keys(/*with_encoder=*/true), /*with_encoder=*/true);

  const at::Tensor image = c.tensor("in.image");  // [B, 3, 1, H, W] in [-1, 1]
  const Vae::Posterior post = vae.encode(image, opt.vae_ranks());
  verify::compare(report, "out.encoded_mean", post.mean, c.tensor("out.encoded_mean"), tol);
  verify::compare(report, "out.encoded_std", post.std, c.tensor("out.encoded_std"), tol);
  // VAE-P must give the one-process encode (both halves of one posterior, so one encode for both checks).
  if (opt.vae_ranks()) {
    const Vae::Posterior one = vae.encode(image);
    const double exact = verify::one_rank_tolerance(opt, tol);
    verify::compare(report, "out.encoded_mean_vs_one_rank", post.mean, one.mean, exact);
    verify::compare(report, "out.encoded_std_vs_one_rank", post.std, one.std, exact);
  }
}

}  // namespace ditgen::qwen_image
