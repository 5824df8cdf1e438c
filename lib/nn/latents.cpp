#include "lib/nn/latents.h"

#include "lib/io/safetensors.h"
#include "lib/runtime/error.h"

namespace ditgen::nn {

at::Tensor patchify(const at::Tensor& z) {
  DITGEN_CHECK(z.dim() == 4, "patchify: expected [B, C, H, W], got {} dims", z.dim());
  const int64_t b = z.size(0), c = z.size(1), h = z.size(2), w = z.size(3);
  DITGEN_CHECK(h % 2 == 0 && w % 2 == 0, "patchify: latent size {}x{} is not even", h, w);
  // [B, C, h/2, dy, w/2, dx] -> [B, C, dy, dx, h/2, w/2]: channel = c*4 + dy*2 + dx
  return z.reshape({b, c, h / 2, 2, w / 2, 2}).permute({0, 1, 3, 5, 2, 4}).reshape({b, c * 4, h / 2, w / 2});
}

at::Tensor unpatchify(const at::Tensor& z) {
  DITGEN_CHECK(z.dim() == 4, "unpatchify: expected [B, 4C, h, w], got {} dims", z.dim());
  const int64_t b = z.size(0), c4 = z.size(1), h = z.size(2), w = z.size(3);
  DITGEN_CHECK(c4 % 4 == 0, "unpatchify: {} channels is not a multiple of 4", c4);
  // [B, C, dy, dx, h, w] -> [B, C, h, dy, w, dx]
  return z.reshape({b, c4 / 4, 2, 2, h, w}).permute({0, 1, 4, 2, 5, 3}).reshape({b, c4 / 4, h * 2, w * 2});
}

at::Tensor pack_latents(const at::Tensor& z) {
  DITGEN_CHECK(z.dim() == 4, "pack_latents: expected [B, C, h, w], got {} dims", z.dim());
  return z.flatten(2).transpose(1, 2).contiguous();  // [B, h*w, C]
}

at::Tensor unpack_latents(const at::Tensor& x, int64_t h, int64_t w) {
  DITGEN_CHECK(x.dim() == 3 && x.size(1) == h * w, "unpack_latents: expected [B, {}*{}, C], got {}", h, w,
               io::shape_str(x.sizes()));
  return x.transpose(1, 2).reshape({x.size(0), x.size(2), h, w}).contiguous();  // [B, C, h, w]
}

}  // namespace ditgen::nn
