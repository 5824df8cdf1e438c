#include "lib/io/image_read.h"

#include <openssl/evp.h>

#include <fstream>
#include <sstream>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_FAILURE_USERMSG
#include <stb_image.h>
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image_resize.h>

#include "lib/io/json.h"
#include "lib/runtime/error.h"

namespace ditgen::io {

std::string sha256_hex(const std::string& bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  DITGEN_CHECK(EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr) == 1,
               "internal: OpenSSL's SHA-256 failed");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

namespace {

bool starts_with(const std::string& s, const char* magic, size_t n) {
  return s.size() >= n && s.compare(0, n, magic, n) == 0;
}

}  // namespace

InputImage read_image(const std::string& path, const std::string& flag) {
  DITGEN_CHECK(!dir_exists(path), "{} '{}' is a folder, not an image file", flag, path);
  DITGEN_CHECK(file_exists(path), "{} '{}': no such file", flag, path);
  std::ifstream in(path, std::ios::binary);
  DITGEN_CHECK(in.good(), "{} '{}' cannot be opened for reading", flag, path);
  std::ostringstream buf;
  buf << in.rdbuf();
  DITGEN_CHECK(!in.bad(), "{} '{}': reading it failed", flag, path);
  const std::string bytes = buf.str();
  DITGEN_CHECK(!bytes.empty(), "{} '{}' is an empty file, not an image", flag, path);
  const bool png = starts_with(bytes, "\x89PNG\r\n\x1a\n", 8), jpeg = starts_with(bytes, "\xff\xd8\xff", 3);
  DITGEN_CHECK(png || jpeg, "{} '{}' is not a PNG or JPEG file (ditgen reads those two formats)", flag, path);
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int size = static_cast<int>(std::min<size_t>(bytes.size(), INT32_MAX));
  int w = 0, h = 0, channels = 0;
  DITGEN_CHECK(stbi_info_from_memory(data, size, &w, &h, &channels) == 1, "{} '{}' is not a readable {}: {}",
               flag, path, png ? "PNG" : "JPEG", stbi_failure_reason());
  DITGEN_CHECK(!stbi_is_16_bit_from_memory(data, size),
               "{} '{}' has 16-bit samples; ditgen reads 8-bit images (convert it to 8 bits per channel)",
               flag, path);
  DITGEN_CHECK(w > 0 && h > 0, "{} '{}' has no pixels ({}x{})", flag, path, w, h);
  DITGEN_CHECK(w <= kMaxImageSide && h <= kMaxImageSide, "{} '{}' is {}x{}: a side over {} px is refused",
               flag, path, w, h, kMaxImageSide);
  int got = 0;
  stbi_uc* pixels =
      stbi_load_from_memory(data, size, &w, &h, &got, 3);  // RGB: gray replicated, alpha dropped
  DITGEN_CHECK(pixels != nullptr, "{} '{}' is truncated or corrupt: {}", flag, path, stbi_failure_reason());
  at::Tensor t = at::empty({h, w, 3}, at::kByte);
  std::memcpy(t.data_ptr<uint8_t>(), pixels, static_cast<size_t>(w) * h * 3);
  stbi_image_free(pixels);
  return {path, sha256_hex(bytes), t};
}

at::Tensor resize_image(const at::Tensor& hwc, int64_t height, int64_t width) {
  DITGEN_CHECK(hwc.dim() == 3 && hwc.size(2) == 3 && hwc.scalar_type() == at::kByte,
               "internal: resize_image takes [H, W, 3] uint8");
  if (hwc.size(0) == height && hwc.size(1) == width) return hwc;
  const at::Tensor src = hwc.contiguous();
  at::Tensor out = at::empty({height, width, 3}, at::kByte);
  const int ok = stbir_resize_uint8_generic(src.data_ptr<uint8_t>(), static_cast<int>(src.size(1)),
                                            static_cast<int>(src.size(0)), 0, out.data_ptr<uint8_t>(),
                                            static_cast<int>(width), static_cast<int>(height), 0, 3,
                                            STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP,
                                            STBIR_FILTER_CATMULLROM, STBIR_COLORSPACE_LINEAR, nullptr);
  DITGEN_CHECK(ok == 1, "internal: resizing an image to {}x{} failed", width, height);
  return out;
}

at::Tensor center_crop(const at::Tensor& hwc, int64_t height, int64_t width) {
  DITGEN_CHECK(height <= hwc.size(0) && width <= hwc.size(1), "internal: cropping {}x{} to {}x{}",
               hwc.size(1), hwc.size(0), width, height);
  const int64_t top = (hwc.size(0) - height) / 2, left = (hwc.size(1) - width) / 2;
  return hwc.narrow(0, top, height).narrow(1, left, width).contiguous();
}

}  // namespace ditgen::io
