#pragma once
// Qwen-Image's VAE decoder and encoder (diffusers `AutoencoderKLQwenImage`, the Wan-2.1 causal 3D VAE,
// docs/reference/qwen-image.md section 3) for one frame, and the per-channel latent
// (de)normalisation the pipelines do around them (section 3.4).
//
// Parameter names equal the checkpoint keys: `decoder.*`, `post_quant_conv.*`, and with the encoder
// (image-to-image) `encoder.*`, `quant_conv.*`. A text-to-image pipeline never encodes, so by default the
// encoder is not declared (see unread_keys()).
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
  // Declares the decoder and post_quant_conv under `wb` (whose prefix is the VAE component root), and
  // with `with_encoder` the encoder and quant_conv; the caller tells its checkpoint source to ignore
  // unread_keys(with_encoder).
  Vae(const VaeConfig& config, const nn::Weights& wb, bool with_encoder = false);
  // Checkpoint key prefixes and suffixes such a Vae does not read, for CheckpointSource's ignore list:
  // the temporal resampling convs (dead for one frame) and, without the encoder, encoder.* / quant_conv.*.
  static std::vector<std::string> unread_keys(bool with_encoder = false);

  const VaeConfig& config() const { return config_; }
  int64_t scale_factor() const { return config_.scale_factor(); }
  bool has_encoder() const { return encoder_ != nullptr; }

  // [B, z_dim, 1, h, w] de-normalised latents -> [B, 3, 1, h*sf, w*sf]: post_quant_conv then the
  // decoder, clamped to [-1, 1] like the reference `decode`. One frame only (T != 1 throws). Runs in
  // the weights' dtype and device (the input is moved there). `vae_parallel` (VAE-P, lib/parallel/rows.h):
  // its ranks, all passing the same z, each decode a band of the rows and all return the whole image;
  // null: this process decodes everything.
  at::Tensor decode(const at::Tensor& z, comm::Communicator* vae_parallel = nullptr) const;

  // The encoder's latent distribution (diffusers' DiagonalGaussianDistribution): mean and
  // std = exp(0.5 * clamp(logvar, -30, 20)), each [B, z_dim, 1, h, w] in the VAE dtype, not normalised.
  struct Posterior {
    at::Tensor mean, std;
  };
  // [B, 3, 1, H, W] in [-1, 1] -> the posterior of [B, z_dim, 1, H/sf, W/sf] (floor sizes): encoder then
  // quant_conv, upstream's `encode(x).latent_dist` for one frame (T != 1 throws; the Wan encoder's first
  // chunk is one frame, so every temporal conv sees only it). Needs the encoder; runs in the weights' dtype
  // and device (the input is moved there). `vae_parallel` (VAE-P): its ranks, all passing the same image,
  // each encode the rows of a band of latent rows and all return the whole posterior; null: this process.
  Posterior encode(const at::Tensor& image, comm::Communicator* vae_parallel = nullptr) const;

  // [B, z_dim, T, h, w] in z's dtype: z * latents_std + latents_mean per channel (3.4 step 2).
  at::Tensor denormalize(const at::Tensor& z) const;
  // [B, z_dim, T, h, w] in z's dtype: (z - latents_mean) * (1 / latents_std) per channel, the
  // image-to-image pipeline's normalisation of encoded latents.
  at::Tensor normalize(const at::Tensor& z) const;

  // qwen-image.md 3.4 steps 2-5: normalised latents [B, z_dim, 1, h, w] -> cast to the VAE dtype ->
  // denormalize -> decode -> frame 0 -> clamp(x * 0.5 + 0.5, 0, 1) in the VAE dtype.
  // Returns float32 [B, 3, h*sf, w*sf] in [0, 1].
  at::Tensor decode_to_image(const at::Tensor& z_normalised, comm::Communicator* vae_parallel = nullptr) const;

  struct Encoder;  // defined in vae.cpp
  struct Decoder;

 private:
  VaeConfig config_;
  at::ScalarType dtype_;
  at::Device device_;
  std::shared_ptr<const Encoder> encoder_;  // null without the encoder
  std::shared_ptr<const Decoder> decoder_;
  at::Tensor mean_, std_;  // [z_dim] float32 CPU, from the config
};

}  // namespace ditgen::qwen_image
