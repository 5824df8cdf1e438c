// Golden check of the FLUX.2 VAE (fixtures models/flux2_vae_*): decode(latents) and the encoder's
// posterior mean against diffusers' AutoencoderKLFlux2.
#include "lib/io/checkpoint.h"
#include "lib/nn/weights.h"
#include "models/flux2/vae.h"
#include "models/flux2/verify.h"

namespace ditgen::flux2 {

void verify_vae(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const double tol = opt.tolerance > 0 ? opt.tolerance : 1e-4;
  const VaeConfig config = VaeConfig::from_json(c.config(), c.file("config.json"));

  auto store = io::TensorStore::open_files({c.file("weights.safetensors")});
  auto source =
      std::make_shared<nn::CheckpointSource>(store, "", Vae::unread_keys(/*with_encoder=*/true));
  const Vae vae(config, nn::Weights(source, opt.dtype, opt.device));
  source->check_all_used();  // an unexpected tensor means the module tree is wrong

  const at::Tensor latents = c.tensor("in.latents");  // [B, L, h, w]
  const at::Tensor decoded = vae.decode(latents, opt.vae_ranks());
  verify::compare(report, "out.decoded", decoded, c.tensor("out.decoded"), tol);
  // VAE-P must give the one-process decode (fp32: 1e-5), not merely something near the reference.
  if (opt.vae_ranks())
    verify::compare(report, "out.decoded_vs_one_rank", decoded, vae.decode(latents),
                    opt.dtype == at::kFloat ? 1e-5 : tol);
  const at::Tensor image = c.tensor("in.image");  // [B, 3, H, W]
  const at::Tensor encoded = vae.encode_mean(image, opt.vae_ranks());
  verify::compare(report, "out.encoded_mean", encoded, c.tensor("out.encoded_mean"), tol);
  if (opt.vae_ranks())
    verify::compare(report, "out.encoded_mean_vs_one_rank", encoded, vae.encode_mean(image),
                    opt.dtype == at::kFloat ? 1e-5 : tol);
}

}  // namespace ditgen::flux2
