#pragma once
// Images in (--image): PNG or JPEG files read with stb_image, checked before any model loads, and
// resized with stb_image_resize where a pipeline needs another size.
#include <ATen/ATen.h>

#include <string>

namespace ditgen::io {

struct InputImage {
  std::string path;
  std::string sha256;  // of the file's bytes, hex (the report and the output's metadata record it)
  at::Tensor pixels;   // [H, W, 3] uint8 RGB: gray is replicated, an alpha channel dropped (as PIL's convert)
};

// The largest side an input image may have.
constexpr int64_t kMaxImageSide = 8192;

// Reads a PNG or JPEG with 8-bit gray, gray + alpha, RGB or RGBA pixels. Refuses, naming `flag` and the
// file: a missing or unreadable file, a file that is not a PNG or JPEG, a truncated or corrupt one,
// 16-bit samples, a zero-size image, and a side over kMaxImageSide.
InputImage read_image(const std::string& path, const std::string& flag = "--image");

// [H, W, 3] uint8 -> [height, width, 3] uint8 (Catmull-Rom filter, sRGB-agnostic as PIL resizes); the
// same tensor when the size already matches.
at::Tensor resize_image(const at::Tensor& hwc, int64_t height, int64_t width);

// The center crop [top, top + height) x [left, left + width) of [H, W, 3].
at::Tensor center_crop(const at::Tensor& hwc, int64_t height, int64_t width);

// SHA-256 of `bytes`, hex.
std::string sha256_hex(const std::string& bytes);

}  // namespace ditgen::io
