#pragma once
// FP8 checkpoints as published: F8_E4M3 weights stored next to their dequantisation scales.
//
// Names (one module `m`, weight `m.weight`):
//   m.weight_scale   the weight's scale: ComfyUI's current layout (`comfy_quant` markers or the
//                    `_quantization_metadata` header entry; Comfy-Org's FLUX.2 / Qwen-Image "fp8" files),
//                    Lightricks' LTX-2 FP8 files (ltx-core reads it as one float per tensor),
//                    NVIDIA ModelOpt and compressed-tensors exports
//   m.scale_weight   the same in ComfyUI's legacy `scaled_fp8` layout (which marks the file with a
//                    `scaled_fp8` tensor)
//   m.input_scale, m.scale_input   a static activation scale from calibration: accepted and NOT used.
//                    ditgen's FP8 linears scale each activation row by its own maximum at call time
//                    (lib/nn/linear.h), which never clips where a calibrated scale would.
//   scaled_fp8, m.comfy_quant       format markers: accepted, nothing to read.
// A scale is one float per tensor ([], [1], [1, 1]) or one per output channel ([N], [N, 1]); block
// scales (ComfyUI's int8_blockwise, DeepSeek-style [N/128, K/128]) are refused naming the key.
//
// The value of a weight is fp8.float() * scale, computed in float32 (exactly what torch computes for a
// float32 scale), then cast to the model dtype. A component with no scale at all (a plain cast to e4m3,
// such as Comfy-Org's qwen_image_fp8_e4m3fn.safetensors) reads its F8 weights as they are (scale 1); in
// a component that has scales, an F8 `.weight` without one is refused naming the key, since that means
// a scale went missing rather than a scale of 1. Other F8 tensors (LTX-2's FP8 files cast the block
// linears' biases to e4m3 without a scale, and ltx-core upcasts them as they are) are read as they are.
#include <ATen/ATen.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "lib/io/checkpoint.h"
#include "lib/nn/weights.h"

namespace ditgen::nn {

class Fp8Scales {
 public:
  // Scans the key names of `store` (reads nothing).
  explicit Fp8Scales(const io::TensorStore& store);

  // Whether any weight of the component has a scale.
  bool scaled() const { return !scale_of_.empty(); }
  bool has_scale(const std::string& weight_key) const { return scale_of_.count(weight_key) != 0; }
  // Scales, input scales and format markers: tensors that are not weights of the module tree.
  bool is_aux(const std::string& key) const;
  bool is_marker(const std::string& key) const { return markers_.count(key) != 0; }
  // The keys read (or accepted) together with weight `key`: its scale and its input scale.
  std::vector<std::string> companions(const std::string& weight_key) const;

  // `slice` of F8_E4M3 weight `key`: fp8 x scale in float32, then `dtype` on `device`.
  at::Tensor dequantize(io::TensorStore& store, const std::string& key, const io::Slice& slice,
                        at::ScalarType dtype, const at::Device& device) const;
  // The stored e4m3 bits of `slice` of 2-D F8_E4M3 weight `key` and its per-output-channel scales (a
  // per-tensor scale broadcast), on `device`.
  Fp8Weight read(io::TensorStore& store, const std::string& key, const io::Slice& slice,
                 const at::Device& device) const;

 private:
  // float32 [n] (one per output row of `slice`), or a 0-dim float32 for a per-tensor scale.
  at::Tensor scale_of(io::TensorStore& store, const std::string& key, const io::Slice& slice,
                      bool per_channel_always) const;
  std::map<std::string, std::string> scale_of_;  // weight key -> its scale's key
  std::map<std::string, std::string> input_of_;  // weight key -> its input scale's key
  std::set<std::string> markers_;                // scaled_fp8, *.comfy_quant
};

}  // namespace ditgen::nn
