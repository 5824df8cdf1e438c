#pragma once
// Qwen-Image's VAE decoder (diffusers `AutoencoderKLQwenImage`, the Wan-2.1 causal 3D VAE,
// docs/reference/qwen-image.md section 3) for one frame, and the per-channel latent
// (de)normalisation the pipeline does around it (section 3.4).
//
// Parameter names equal the checkpoint keys: `decoder.*`, `post_quant_conv.*`. A text-to-image
// pipeline never encodes, so `encoder.*` and `quant_conv.*` are not declared (see unread_keys()).
#include <ATen/ATen.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lib/comm/communicator.h"
#include "lib/nn/weights.h"

namespace ditgen::qwen_image {

// vae/config.json. Defaults are the real Qwen-Image values (qwen-image.md 3.1; they equal the
// diffusers constructor defaults).
struct VaeConfig {
  int64_t base_dim = 96;
  int64_t z_dim = 16;
  std::vector<int64_t> dim_mult = {1, 2, 4, 4};
  int64_t num_res_blocks = 2;
  std::vector<double> attn_scales = {};
  std::vector<bool> temperal_downsample = {false, true, true};  // sic: the upstream key's spelling
  // Image channels: the decoder's output width.
  int64_t input_channels = 3;
  std::vector<double> latents_mean = {-0.7571, -0.7089, -0.9113, 0.1075,  -0.1745, 0.9653,  -0.1517, 1.5508,
                                      0.4134,  -0.0715, 0.5517,  -0.3632, -0.1922, -0.9497, 0.2503,  -0.2921};
  std::vector<double> latents_std = {2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160};

  // Throws naming `where` (the file) and the key on values this port does not implement
  // (attention at any scale) or that are inconsistent (list lengths, non-positive sizes or stds).
  static VaeConfig from_json(const nlohmann::json& j, const std::string& where);

  // Pixels per latent pixel: 2^len(temperal_downsample) (one spatial x2 per resampling stage).
  int64_t scale_factor() const { return int64_t{1} << temperal_downsample.size(); }
};

class Vae {
 public:
  // Declares the decoder and post_quant_conv under `wb` (whose prefix is the VAE component root);
  // the caller tells its checkpoint source to ignore unread_keys().
  Vae(const VaeConfig& config, const nn::Weights& wb);
  // Checkpoint key prefixes and suffixes a decode-only Vae does not read, for CheckpointSource's
  // ignore list: the encoder, quant_conv, and the decoder's temporal upsampling convs.
  static std::vector<std::string> unread_keys();

  const VaeConfig& config() const { return config_; }
  int64_t scale_factor() const { return config_.scale_factor(); }

  // [B, z_dim, 1, h, w] de-normalised latents -> [B, 3, 1, h*sf, w*sf]: post_quant_conv then the
  // decoder, clamped to [-1, 1] like the reference `decode`. One frame only (T != 1 throws). Runs in
  // the weights' dtype and device (the input is moved there). `vae_parallel` (VAE-P, lib/parallel/rows.h):
  // its ranks, all passing the same z, each decode a band of the rows and all return the whole image;
  // null: this process decodes everything.
  at::Tensor decode(const at::Tensor& z, comm::Communicator* vae_parallel = nullptr) const;

  // [B, z_dim, T, h, w] in z's dtype: z * latents_std + latents_mean per channel (3.4 step 2).
  at::Tensor denormalize(const at::Tensor& z) const;

  // qwen-image.md 3.4 steps 2-5: normalised latents [B, z_dim, 1, h, w] -> cast to the VAE dtype ->
  // denormalize -> decode -> frame 0 -> clamp(x * 0.5 + 0.5, 0, 1) in the VAE dtype.
  // Returns float32 [B, 3, h*sf, w*sf] in [0, 1].
  at::Tensor decode_to_image(const at::Tensor& z_normalised, comm::Communicator* vae_parallel = nullptr) const;

  struct Decoder;  // defined in vae.cpp

 private:
  VaeConfig config_;
  at::ScalarType dtype_;
  at::Device device_;
  std::shared_ptr<const Decoder> decoder_;
  at::Tensor mean_, std_;  // [z_dim] float32 CPU, from the config
};

}  // namespace ditgen::qwen_image
