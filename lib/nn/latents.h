#pragma once
// Latent layouts the image DiTs share: 2x2 patches folded into channels and the patch grid packed into
// tokens (FLUX.2: flux2.md §3.6; Qwen-Image's _pack_latents: qwen-image.md §5.2 is the composition).
#include <ATen/ATen.h>

namespace ditgen::nn {

// [B, C, H, W] -> [B, 4C, H/2, W/2]; new channel = c*4 + dy*2 + dx.
at::Tensor patchify(const at::Tensor& z);
// [B, 4C, h, w] -> [B, C, 2h, 2w]; inverse of patchify.
at::Tensor unpatchify(const at::Tensor& z);
// [B, C, h, w] -> [B, h*w, C] (contiguous); token n = row*w + col.
at::Tensor pack_latents(const at::Tensor& z);
// [B, h*w, C] -> [B, C, h, w] (contiguous); inverse of pack_latents for the plain text-to-image grid.
at::Tensor unpack_latents(const at::Tensor& x, int64_t h, int64_t w);

}  // namespace ditgen::nn
