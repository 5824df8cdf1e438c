#include "lib/io/image.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

#include "lib/runtime/error.h"

namespace ditgen::io {

at::Tensor to_uint8_hwc(const at::Tensor& image) {
  DITGEN_CHECK(image.dim() == 3 && image.size(0) == 3, "expected an image [3, H, W], got {} dims", image.dim());
  at::Tensor x = at::round(image.to(at::kCPU, at::kFloat).clamp(0, 1) * 255.0);  // torch.round: half to even
  return x.to(at::kByte).permute({1, 2, 0}).contiguous();
}

std::string png_bytes(const at::Tensor& image_chw) {
  at::Tensor hwc = to_uint8_hwc(image_chw);
  const int h = static_cast<int>(hwc.size(0)), w = static_cast<int>(hwc.size(1));
  std::string out;
  auto append = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), static_cast<size_t>(size));
  };
  DITGEN_CHECK(stbi_write_png_to_func(append, &out, w, h, 3, hwc.data_ptr<uint8_t>(), w * 3) != 0 && !out.empty(),
               "cannot encode a {}x{} PNG", w, h);
  return out;
}

}  // namespace ditgen::io
