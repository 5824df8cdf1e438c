#include "models/flux2/image_latents.h"

#include "lib/io/safetensors.h"
#include "lib/nn/latents.h"
#include "lib/runtime/error.h"

namespace ditgen::flux2 {

at::Tensor reference_ids(const std::vector<std::pair<int64_t, int64_t>>& grids) {
  std::vector<at::Tensor> parts;
  for (size_t k = 0; k < grids.size(); ++k) {
    const auto [h, w] = grids[k];
    at::Tensor rows = at::arange(h, at::kLong).repeat_interleave(w);
    at::Tensor cols = at::arange(w, at::kLong).repeat({h});
    at::Tensor t = at::full({h * w}, 10 * static_cast<int64_t>(k + 1), at::kLong);
    parts.push_back(at::stack({t, rows, cols, at::zeros({h * w}, at::kLong)}, 1));  // [h*w, 4]
  }
  if (parts.empty()) return at::empty({0, 4}, at::kLong);
  return at::cat(parts, 0);  // [N, 4]
}

ReferenceTokens reference_tokens(const Vae& vae, const std::vector<at::Tensor>& images, int64_t batch,
                                 comm::Communicator* vae_parallel) {
  DITGEN_CHECK(!images.empty(), "FLUX.2 reference images: none given");
  DITGEN_CHECK(batch >= 1, "FLUX.2 reference images: batch must be positive, got {}", batch);
  const int64_t unit = 2 * vae.scale_factor();  // pixels per token side
  std::vector<at::Tensor> packed;
  std::vector<std::pair<int64_t, int64_t>> grids;
  for (size_t k = 0; k < images.size(); ++k) {
    const at::Tensor& image = images[k];
    DITGEN_CHECK(image.dim() == 4 && image.size(0) == 1,
                 "FLUX.2 reference image {}: expected [1, 3, H, W], got {}", k, io::shape_str(image.sizes()));
    DITGEN_CHECK(
        image.size(2) % unit == 0 && image.size(3) % unit == 0 && image.size(2) > 0 && image.size(3) > 0,
        "FLUX.2 reference image {}: {}x{} pixels are not multiples of {}", k, image.size(3), image.size(2),
        unit);
    at::Tensor z = vae.encode_mean(image, vae_parallel);  // [1, L, H/sf, W/sf], VAE dtype
    z = vae.bn_normalize(nn::patchify(z));                // [1, 4L, h, w]
    grids.emplace_back(z.size(2), z.size(3));
    packed.push_back(nn::pack_latents(z));  // [1, h*w, 4L]
  }
  at::Tensor latents = at::cat(packed, 1);             // [1, N, 4L]
  at::Tensor ids = reference_ids(grids).unsqueeze(0);  // [1, N, 4]
  return {latents.repeat({batch, 1, 1}), ids.repeat({batch, 1, 1})};
}

}  // namespace ditgen::flux2
