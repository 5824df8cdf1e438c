#pragma once
// Qwen-Image image-to-image (diffusers QwenImageImg2ImgPipeline): the strength rule that truncates the
// schedule, and the initial latents made from the input image: VAE-encoded with a SAMPLED latent,
// normalised, noised at the first kept timestep and packed.
#include <ATen/ATen.h>

#include "lib/comm/communicator.h"
#include "lib/sched/flow_match.h"
#include "models/qwen_image/vae.h"

namespace ditgen::qwen_image {

// The schedule an image-to-image run denoises with (upstream get_timesteps, as StableDiffusion3's):
// with N steps, init = min(N * strength, N) and t_start = int(max(N - init, 0)) in double precision (int()
// truncates: N = 4, strength 0.6 -> init 2.4, t_start 1, 3 steps kept). The loop runs timesteps[t_start:]
// with sigmas[t_start:] (the scheduler's begin index), and the image is noised at sigmas[t_start].
struct Img2ImgSchedule {
  sched::Schedule schedule;  // the kept steps: N - t_start timesteps, their sigmas and the final 0
  int64_t t_start = 0;       // steps skipped at the start of the full schedule
  float first_sigma() const { return schedule.sigmas.front(); }
};
// `full`: the N-step schedule a text-to-image run would use (mu from the output's token count, as the
// img2img pipeline computes it). Throws on strength outside [0, 1] (upstream's check) and when no step is
// left, i.e. strength 0 (upstream raises too; any strength > 0 keeps at least one step).
Img2ImgSchedule img2img_schedule(const sched::Schedule& full, double strength);

// The image's posterior (encoded once per generation; the sample is drawn per run): `image` [B_img, 3, H, W]
// (or [B_img, 3, 1, H, W]) in [-1, 1] (uint8 / 255 * 2 - 1 in fp32), H and W multiples of
// 2 * vae.scale_factor(), encoded in the VAE's dtype (the VAE needs its encoder) to mean and std
// [B_img, z_dim, 1, H / sf, W / sf]. `vae_parallel` (VAE-P) splits the encode by rows.
Vae::Posterior img2img_posterior(const Vae& vae, const at::Tensor& image,
                                 comm::Communicator* vae_parallel = nullptr);

// The loop's initial latents from that posterior: SAMPLED as mean + std * `sample_noise` (the posterior's
// shape, the draw upstream's latent_dist.sample takes first), normalised per channel ((x - mean) / std),
// repeated to B rows, then noised with `noise` ([B, 1, z_dim, h, w], the pipeline's draw after it) at
// `sigma` (first_sigma()): sigma * noise + (1 - sigma) * x (scheduler.scale_noise), and packed 2x2 into
// tokens. Returns [B, (h/2)*(w/2), 4*z_dim] in noise's dtype and device; B must be a multiple of B_img.
at::Tensor img2img_initial_latents(const Vae& vae, const Vae::Posterior& posterior,
                                   const at::Tensor& sample_noise, const at::Tensor& noise, float sigma);

}  // namespace ditgen::qwen_image
