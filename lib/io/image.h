#pragma once
// PNG output. Images arrive as float [3, H, W] in [0, 1] and are quantised with round-half-even,
// as the reference pipelines do.
#include <ATen/ATen.h>

#include <string>

namespace ditgen::io {

// [3, H, W] float in [0, 1] -> [H, W, 3] uint8 (round half to even).
at::Tensor to_uint8_hwc(const at::Tensor& image);
// The PNG file's bytes for an image [3, H, W] float in [0, 1] (written through io::OutputFiles). A
// non-empty `parameters` is stored under the text key "parameters" (the generation settings, where image
// tools look for them): a tEXt chunk when it is ASCII, else an iTXt chunk (UTF-8).
std::string png_bytes(const at::Tensor& image_chw, const std::string& parameters = "");

}  // namespace ditgen::io
