#include "models/qwen_image/image_latents.h"

#include <algorithm>
#include <cmath>

#include "lib/io/safetensors.h"
#include "lib/nn/latents.h"
#include "lib/runtime/error.h"

namespace ditgen::qwen_image {

Img2ImgSchedule img2img_schedule(const sched::Schedule& full, double strength) {
  DITGEN_CHECK(std::isfinite(strength) && strength >= 0 && strength <= 1,
               "image-to-image: strength must be in [0, 1], got {}", strength);
  const auto n = static_cast<int64_t>(full.timesteps.size());
  DITGEN_CHECK(n >= 1 && full.sigmas.size() == full.timesteps.size() + 1,
               "internal: image-to-image: a schedule of {} timesteps and {} sigmas", n, full.sigmas.size());
  const double init = std::min(static_cast<double>(n) * strength, static_cast<double>(n));
  const auto t_start = static_cast<int64_t>(std::max(static_cast<double>(n) - init, 0.0));  // truncates
  DITGEN_CHECK(t_start < n, "image-to-image: strength {} leaves no denoising step of {} (it must be above 0)",
               strength, n);
  Img2ImgSchedule out;
  out.t_start = t_start;
  out.schedule.timesteps.assign(full.timesteps.begin() + t_start, full.timesteps.end());
  out.schedule.sigmas.assign(full.sigmas.begin() + t_start, full.sigmas.end());
  return out;
}

Vae::Posterior img2img_posterior(const Vae& vae, const at::Tensor& image, comm::Communicator* vae_parallel) {
  const at::Tensor frames = image.dim() == 4 ? image.unsqueeze(2) : image;  // [B_img, 3, 1, H, W]
  const int64_t unit = 2 * vae.scale_factor();
  DITGEN_CHECK(
      frames.dim() == 5 && frames.size(2) == 1 && frames.size(3) % unit == 0 && frames.size(4) % unit == 0,
      "Qwen-Image image-to-image: expected an image [B, 3, H, W] with H and W multiples of {}, got {}", unit,
      io::shape_str(image.sizes()));
  return vae.encode(frames, vae_parallel);  // [B_img, z, 1, h, w] each, VAE dtype
}

at::Tensor img2img_initial_latents(const Vae& vae, const Vae::Posterior& post, const at::Tensor& sample_noise,
                                   const at::Tensor& noise, float sigma) {
  DITGEN_CHECK(sample_noise.sizes() == post.mean.sizes(),
               "Qwen-Image image-to-image: the posterior sample's noise must be {}, got {}",
               io::shape_str(post.mean.sizes()), io::shape_str(sample_noise.sizes()));
  const int64_t b_img = post.mean.size(0), z = post.mean.size(1), h = post.mean.size(3),
                w = post.mean.size(4);
  DITGEN_CHECK(noise.dim() == 5 && noise.size(1) == 1 && noise.size(2) == z && noise.size(3) == h &&
                   noise.size(4) == w && noise.size(0) % b_img == 0,
               "Qwen-Image image-to-image: expected noise [B, 1, {}, {}, {}] with B a multiple of {}, got {}",
               z, h, w, b_img, io::shape_str(noise.sizes()));

  // latent_dist.sample(): mean + std * eps in the posterior's dtype; then the pipeline's normalisation.
  at::Tensor x = post.mean + post.std * sample_noise.to(post.mean.device(), post.mean.scalar_type());
  x = vae.normalize(x);  // [B_img, z, 1, h, w]
  x = x.to(noise.device(), noise.scalar_type())
          .repeat({noise.size(0) / b_img, 1, 1, 1, 1});  // [B, z, 1, h, w]
  x = x.transpose(1, 2);                                 // [B, 1, z, h, w], the noise's layout

  // scale_noise at the begin index: the fp32 sigma cast to the sample's dtype, then a tensor expression.
  const at::Tensor s = at::scalar_tensor(sigma, at::kFloat).to(noise.device(), noise.scalar_type());
  x = s * noise + (1.0 - s) * x;                          // [B, 1, z, h, w]
  return nn::pack_latents(nn::patchify(x.select(1, 0)));  // [B, (h/2)*(w/2), 4z]
}

}  // namespace ditgen::qwen_image
