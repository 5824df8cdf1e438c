// Golden check of the Qwen-Image VAE (fixture models/qwenimage_vae_*): decode of one de-normalised
// latent frame against diffusers' AutoencoderKLQwenImage.
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

}  // namespace ditgen::qwen_image
