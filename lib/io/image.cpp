#include "lib/io/image.h"

#include <zlib.h>

#include <algorithm>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

#include "lib/runtime/error.h"

namespace ditgen::io {

at::Tensor to_uint8_hwc(const at::Tensor& image) {
  DITGEN_CHECK(image.dim() == 3 && image.size(0) == 3, "expected an image [3, H, W], got {} dims", image.dim());
  at::Tensor x = at::round(image.to(at::kCPU, at::kFloat).clamp(0, 1) * 255.0);  // torch.round: half to even
  return x.to(at::kByte).permute({1, 2, 0}).contiguous();
}

namespace {

void put_u32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((v >> shift) & 0xff));
}

// A PNG chunk: length, type, data, CRC-32 of type + data.
std::string png_chunk(const char* type, const std::string& data) {
  std::string c;
  put_u32(c, static_cast<uint32_t>(data.size()));
  const std::string body = std::string(type, 4) + data;
  c += body;
  put_u32(c, static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
  return c;
}

}  // namespace

std::string png_bytes(const at::Tensor& image_chw, const std::string& parameters) {
  at::Tensor hwc = to_uint8_hwc(image_chw);
  const int h = static_cast<int>(hwc.size(0)), w = static_cast<int>(hwc.size(1));
  std::string out;
  auto append = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), static_cast<size_t>(size));
  };
  DITGEN_CHECK(stbi_write_png_to_func(append, &out, w, h, 3, hwc.data_ptr<uint8_t>(), w * 3) != 0 && !out.empty(),
               "cannot encode a {}x{} PNG", w, h);
  if (parameters.empty()) return out;
  // After the signature (8 bytes) and IHDR (4 + 4 + 13 + 4 bytes), where text chunks may go.
  constexpr size_t kAfterIhdr = 8 + 25;
  DITGEN_CHECK(out.size() > kAfterIhdr && out.compare(12, 4, "IHDR") == 0, "cannot add text to the {}x{} PNG", w, h);
  const bool ascii = std::all_of(parameters.begin(), parameters.end(), [](char c) { return (c & 0x80) == 0 && c != 0; });
  const std::string chunk = ascii ? png_chunk("tEXt", std::string("parameters") + '\0' + parameters)
                                  // keyword, 0, compression flag 0 and method 0, empty language and translated keyword
                                  : png_chunk("iTXt", std::string("parameters") + std::string("\0\0\0\0\0", 5) + parameters);
  out.insert(kAfterIhdr, chunk);
  return out;
}

}  // namespace ditgen::io
