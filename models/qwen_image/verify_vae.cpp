// Golden checks of the Qwen-Image VAE against diffusers' AutoencoderKLQwenImage: decode of one
// de-normalised latent frame (fixtures models/qwenimage_vae_*), and the encoder's latent distribution of
// one frame (models/qwenimage_vae_encode_*).
#include "lib/io/checkpoint.h"
#include "lib/nn/weights.h"
#include "models/qwen_image/vae.h"
#include "models/qwen_image/verify.h"

namespace ditgen::qwen_image {

void verify_vae(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const double tol = opt.tolerance > 0 ? opt.tolerance : 1e-4;
  const VaeConfig config = VaeConfig::from_json(c.config(), c.file("config.json"));

  auto store = io::TensorStore::open_files({c.file("weights.safetensors")});
  auto source = std::make_shared<nn::CheckpointSource>(store, "", Vae::unread_keys());
  const Vae vae(config, nn::Weights(source, opt.dtype, opt.device));
  source->check_all_used();  // an unexpected tensor means the module tree is wrong

  const at::Tensor latents = c.tensor("in.latents");  // [B, z_dim, 1, h, w], already de-normalised
  const at::Tensor decoded = vae.decode(latents, opt.vae_ranks());
  verify::compare(report, "out.decoded", decoded, c.tensor("out.decoded"), tol);
  // VAE-P must give the one-process decode (fp32: 1e-5), not merely something near the reference.
  if (opt.vae_ranks())
    verify::compare(report, "out.decoded_vs_one_rank", decoded, vae.decode(latents),
                    opt.dtype == at::kFloat ? 1e-5 : tol);
}

void verify_vae_encode(const verify::Case& c, const verify::CaseOptions& opt, verify::Report& report) {
  const double tol = opt.tolerance > 0 ? opt.tolerance : 1e-4;
  const VaeConfig config = VaeConfig::from_json(c.config(), c.file("config.json"));

  auto store = io::TensorStore::open_files({c.file("weights.safetensors")});
  auto source = std::make_shared<nn::CheckpointSource>(store, "", Vae::unread_keys(/*with_encoder=*/true));
  const Vae vae(config, nn::Weights(source, opt.dtype, opt.device), /*with_encoder=*/true);
  source->check_all_used();

  const at::Tensor image = c.tensor("in.image");  // [B, 3, 1, H, W] in [-1, 1]
  const Vae::Posterior post = vae.encode(image, opt.vae_ranks());
  verify::compare(report, "out.encoded_mean", post.mean, c.tensor("out.encoded_mean"), tol);
  verify::compare(report, "out.encoded_std", post.std, c.tensor("out.encoded_std"), tol);
  // VAE-P must give the one-process encode (fp32: 1e-5), not merely something near the reference.
  if (opt.vae_ranks()) {
    const Vae::Posterior one = vae.encode(image);
    const double exact = opt.dtype == at::kFloat ? 1e-5 : tol;
    verify::compare(report, "out.encoded_mean_vs_one_rank", post.mean, one.mean, exact);
    verify::compare(report, "out.encoded_std_vs_one_rank", post.std, one.std, exact);
  }
}

}  // namespace ditgen::qwen_image
