#pragma once
// LTX-2 image-to-video (diffusers LTX2ImageToVideoPipeline): the conditioning image becomes latent frame 0
// of the video latents, kept clean through the loop, and the rest is noise.
//
// How the loop uses them (upstream, per step with timestep t): the video stream's timestep is per token,
// t * (1 - conditioning_mask) ([B, S]: 0 on frame 0's tokens, t elsewhere; the audio stream and the
// "sigma" keep the scalar t; with CFG batched the mask is repeated for the uncond half); after guidance
// the scheduler steps only frames 1.. (x += (sigma_next - sigma) * v on tokens with mask 0; frame 0's
// tokens are copied unchanged). Context parallelism splits the mask with the video tokens.
#include <ATen/ATen.h>

#include "lib/comm/communicator.h"
#include "models/ltx2/vae.h"

namespace ditgen::ltx2 {

struct ImageToVideoLatents {
  at::Tensor latents;            // [B, F*h*w, C] packed (token = (f*h + y)*w + x), noise's dtype and device
  at::Tensor conditioning_mask;  // [B, F*h*w]: 1 on frame 0's tokens, 0 elsewhere, same dtype and device
};

// The conditioning image's latent (encoded once per generation): `image` [B_img, 3, H, W] in [-1, 1]
// (uint8 / 255 * 2 - 1 in fp32), H and W multiples of the encoder's spatial ratio. Each image is encoded as
// a one-frame video, as upstream does image by image (the VAE needs its encoder), to its posterior mean
// (mode): [B_img, C, 1, H / ratio, W / ratio] in the VAE's dtype, not normalised. `vae_parallel` (VAE-P)
// splits the encode by rows; every rank returns the same.
at::Tensor encode_first_frame(const VideoVae& vae, const at::Tensor& image,
                              comm::Communicator* vae_parallel = nullptr);

// The loop's initial latents from `encoded` (encode_first_frame; B_img 1 or B) and `noise` [B, C, F, h, w]
// (the pipeline's unpacked draw, fp32 upstream): the image latent cast to noise's dtype, normalised
// (z - latents_mean) / latents_std (upstream passes no scaling factor here), repeated over the F frames;
// then latents = init * mask + noise * (1 - mask) with mask 1 on frame 0, and both packed with the
// transformer's patch sizes 1 x 1 x 1 (LTX-2's).
ImageToVideoLatents image_to_video_latents(const VideoVae& vae, const at::Tensor& encoded,
                                           const at::Tensor& noise);

}  // namespace ditgen::ltx2
