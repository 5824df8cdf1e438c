#pragma once
// FLUX.2 reference images (multi-reference editing, diffusers Flux2Pipeline(image=[...]), flux2.md 5.5):
// each image VAE-encoded separately (the posterior's mode), patchified 2x2, normalised with the VAE's
// BatchNorm running statistics, packed into tokens; the tokens of all images concatenated in order, with
// position ids (t, h, w, l) = (10 * (k + 1), row, col, 0) for image k. The pipeline appends them after the
// noisy image tokens in every transformer call (latents cast to the transformer's dtype, ids after the
// image ids) and keeps only the first N_img outputs.
#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "lib/comm/communicator.h"
#include "models/flux2/vae.h"

namespace ditgen::flux2 {

struct ReferenceTokens {
  at::Tensor latents;  // [B, N, 4L] in the VAE's dtype and device; N = sum over images of h_k * w_k
  at::Tensor ids;      // [B, N, 4] int64 on the CPU
};

// `images`: one [1, in_channels, H_k, W_k] tensor per reference image, pixels in [-1, 1] (upstream's
// preprocess: uint8 / 255 * 2 - 1 in fp32), any dtype and device (moved to the VAE's); H_k and W_k
// multiples of 2 * vae.scale_factor() (upstream floors the sizes to them before preprocessing). The VAE
// needs its encoder. Token grid of image k: h_k = H_k / (2 sf), w_k = W_k / (2 sf). The tokens are
// repeated over `batch` rows (one prompt's references are shared by its images). `vae_parallel` (VAE-P):
// its ranks, all passing the same images, split each encode by rows; all return the same tokens.
ReferenceTokens reference_tokens(const Vae& vae, const std::vector<at::Tensor>& images, int64_t batch = 1,
                                 comm::Communicator* vae_parallel = nullptr);

// The ids alone for token grids (h_k, w_k): [sum h_k * w_k, 4] int64 on the CPU, image k's rows
// (10 * (k + 1), row, col, 0) in row-major order (upstream's _prepare_image_ids with scale 10).
at::Tensor reference_ids(const std::vector<std::pair<int64_t, int64_t>>& grids);

}  // namespace ditgen::flux2
