#pragma once
// LTX-2's vocoder (diffusers `LTX2Vocoder`, a HiFi-GAN generator; docs/reference/ltx2.md 5.2): stereo
// log-mel [B, 2, T, mel] from the audio VAE -> waveform [B, 2, T * prod(upsample_factors)] in (-1, 1).
//
// Parameter names equal the checkpoint keys: `conv_in`, `upsamplers.{i}`, `resnets.{k}.convs{1,2}.{d}`,
// `conv_out` (no weight-norm tensors: the checkpoint stores the folded weights).
#include <ATen/ATen.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lib/nn/weights.h"

namespace ditgen::ltx2 {

// vocoder/config.json. Defaults are the real LTX-2.0 values (ltx2.md 5.2; they equal the diffusers
// constructor defaults).
struct VocoderConfig {
  int64_t in_channels = 128;  // stereo * mel bins, channel = s * mel + m
  int64_t hidden_channels = 1024;
  int64_t out_channels = 2;
  std::vector<int64_t> upsample_kernel_sizes = {16, 15, 8, 4, 4};
  std::vector<int64_t> upsample_factors = {6, 5, 2, 2, 2};
  std::vector<int64_t> resnet_kernel_sizes = {3, 7, 11};
  std::vector<std::vector<int64_t>> resnet_dilations = {{1, 3, 5}, {1, 3, 5}, {1, 3, 5}};
  double leaky_relu_negative_slope = 0.1;
  std::string final_act_fn = "tanh";  // "tanh", "clamp" (to [-1, 1]) or "none" (null upstream)
  bool final_bias = true;
  int64_t output_sampling_rate = 24000;

  // Throws naming `where` (the file) and the key on values this port does not implement (snake
  // activations, anti-aliasing) or that are inconsistent (list lengths, an upsampler whose length is
  // not exactly x factor, channels not halving evenly).
  static VocoderConfig from_json(const nlohmann::json& j, const std::string& where);

  // Waveform samples per mel frame: prod(upsample_factors) (240 for the real config).
  int64_t upsample_factor() const;
};

class Vocoder {
 public:
  Vocoder(const VocoderConfig& config, const nn::Weights& wb);

  const VocoderConfig& config() const { return config_; }
  int64_t sample_rate() const { return config_.output_sampling_rate; }

  // mel [B, S, T, M] with S * M = in_channels -> waveform [B, out_channels, T * upsample_factor()].
  // Runs in the weights' dtype and device (the input is moved there).
  at::Tensor forward(const at::Tensor& mel) const;

  struct Net;  // defined in vocoder.cpp

 private:
  VocoderConfig config_;
  at::ScalarType dtype_;
  at::Device device_;
  std::shared_ptr<const Net> net_;
};

}  // namespace ditgen::ltx2
