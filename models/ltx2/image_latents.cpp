#include "models/ltx2/image_latents.h"

#include "lib/io/safetensors.h"
#include "lib/runtime/error.h"

namespace ditgen::ltx2 {

namespace {
// [B, C, F, h, w] -> [B, F*h*w, C] (upstream _pack_latents with patch sizes 1).
at::Tensor pack(const at::Tensor& x) { return x.flatten(2).transpose(1, 2).contiguous(); }
}  // namespace

at::Tensor encode_first_frame(const VideoVae& vae, const at::Tensor& image,
                              comm::Communicator* vae_parallel) {
  DITGEN_CHECK(image.dim() == 4, "LTX-2 image-to-video: expected an image [B, 3, H, W], got {}",
               io::shape_str(image.sizes()));
  std::vector<at::Tensor> encoded;
  for (int64_t i = 0; i < image.size(0); ++i)
    encoded.push_back(vae.encode_mean(image.narrow(0, i, 1).unsqueeze(2), vae_parallel));  // [1, C, 1, h, w]
  return at::cat(encoded, 0);  // [B_img, C, 1, h, w]
}

ImageToVideoLatents image_to_video_latents(const VideoVae& vae, const at::Tensor& encoded,
                                           const at::Tensor& noise) {
  DITGEN_CHECK(noise.dim() == 5 && noise.size(1) == vae.config().latent_channels,
               "LTX-2 image-to-video: expected noise [B, {}, F, h, w], got {}", vae.config().latent_channels,
               io::shape_str(noise.sizes()));
  const int64_t b = noise.size(0), frames = noise.size(2), b_img = encoded.size(0);
  DITGEN_CHECK(b_img == 1 || b_img == b, "LTX-2 image-to-video: {} images for a batch of {}", b_img, b);
  at::Tensor init = encoded.to(noise.device(), noise.scalar_type());  // [B_img, C, 1, h, w]
  DITGEN_CHECK(
      init.dim() == 5 && init.size(2) == 1 && init.size(3) == noise.size(3) && init.size(4) == noise.size(4),
      "LTX-2 image-to-video: the image encodes to {} but the noise is {}", io::shape_str(init.sizes()),
      io::shape_str(noise.sizes()));
  init = vae.normalize(init).repeat({1, 1, frames, 1, 1});  // [B_img, C, F, h, w]

  at::Tensor mask = at::zeros({b, 1, frames, noise.size(3), noise.size(4)}, noise.options());
  mask.narrow(2, 0, 1).fill_(1.0);
  // The same interpolation as upstream (exact: frame 0 is init * 1 + noise * 0, the rest noise).
  at::Tensor latents = init * mask + noise * (1 - mask);  // [B, C, F, h, w]
  return {pack(latents), pack(mask).squeeze(-1)};
}

}  // namespace ditgen::ltx2
