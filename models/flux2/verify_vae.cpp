// Golden check of the FLUX.2 VAE (fixtures models/flux2_vae_*): decode(latents) and the encoder's
// posterior mean against diffusers' AutoencoderKLFlux2.
#include "lib/verify/module.h"
#include "models/flux2/vae.h"
#include "models/flux2/verify.h"

namespace ditgen::flux2 {

void verify_vae(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const double tol = verify::tolerance(opt, 1e-4);
  const Vae vae =
      verify::load_case_module<Vae>(c, opt, VaeConfig::from_json(c.config(), c.file("config.json")),
                                    Vae::unread_keys(/*with_encoder=*/true));

  const at::Tensor latents = c.tensor("in.latents");  // [B, L, h, w]
  verify::compare_with_one_rank(
      report, c, opt, "out.decoded", vae.decode(latents, opt.vae_ranks()),
      [&] { return vae.decode(latents); }, tol);
  const at::Tensor image = c.tensor("in.image");  // [B, 3, H, W]
  verify::compare_with_one_rank(
      report, c, opt, "out.encoded_mean", vae.encode_mean(image, opt.vae_ranks()),
      [&] { return vae.encode_mean(image); }, tol);
}

}  // namespace ditgen::flux2
