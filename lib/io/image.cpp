#include "lib/io/image.h"

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

#include <cstdio>

#include "lib/runtime/error.h"

namespace ditgen::io {

at::Tensor to_uint8_hwc(const at::Tensor& image) {
  DITGEN_CHECK(image.dim() == 3 && image.size(0) == 3, "expected an image [3, H, W], got {} dims", image.dim());
  at::Tensor x = at::round(image.to(at::kCPU, at::kFloat).clamp(0, 1) * 255.0);  // torch.round: half to even
  return x.to(at::kByte).permute({1, 2, 0}).contiguous();
}

void write_png(const std::string& path, const at::Tensor& image_chw) {
  at::Tensor hwc = to_uint8_hwc(image_chw);
  const int h = static_cast<int>(hwc.size(0)), w = static_cast<int>(hwc.size(1));
  const std::string tmp = path + ".partial";
  DITGEN_CHECK(stbi_write_png(tmp.c_str(), w, h, 3, hwc.data_ptr<uint8_t>(), w * 3) != 0,
               "cannot write PNG '{}' (does the folder exist and is it writable?)", tmp);
  DITGEN_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename '{}' to '{}'", tmp, path);
}

}  // namespace ditgen::io
