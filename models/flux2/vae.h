#pragma once
// FLUX.2's VAE (diffusers `AutoencoderKLFlux2`, docs/reference/flux2.md section 3) and the latent
// bookkeeping the pipeline does around it: 2x2 patchify, packing into tokens, and the BatchNorm
// statistics that (de)normalise the 128-channel patchified latents.
//
// Parameter names equal the checkpoint keys: `encoder.*`, `decoder.*`, `quant_conv.*`,
// `post_quant_conv.*`, `bn.running_mean`, `bn.running_var` (`bn.num_batches_tracked` is unused).
#include <ATen/ATen.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "lib/comm/communicator.h"
#include "lib/nn/latents.h"
#include "lib/nn/weights.h"

namespace ditgen::flux2 {

// vae/config.json. Defaults are the diffusers constructor defaults (= the real FLUX.2-dev values).
struct VaeConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<int64_t> block_out_channels = {128, 256, 512, 512};
  int64_t layers_per_block = 2;
  int64_t latent_channels = 32;
  int64_t norm_num_groups = 32;
  int64_t sample_size = 1024;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;
  double batch_norm_eps = 1e-4;
  std::vector<int64_t> patch_size = {2, 2};

  // Throws naming `where` (the file) and the key on values this port does not implement
  // (other block types or activations, a patch size other than 2x2, channel counts that
  // `norm_num_groups` does not divide, ...).
  static VaeConfig from_json(const nlohmann::json& j, const std::string& where);

  // Pixels per latent pixel: 2^(len(block_out_channels) - 1).
  int64_t scale_factor() const { return int64_t{1} << (block_out_channels.size() - 1); }
  // Channels of the patchified latent space the transformer sees (4 * latent_channels).
  int64_t patched_channels() const { return latent_channels * patch_size[0] * patch_size[1]; }
};

class Vae {
 public:
  // Declares every tensor under `wb` (whose prefix is the VAE component root). With
  // `with_encoder` false the encoder and quant_conv are not read (decode-only pipelines); the
  // caller then tells its checkpoint source to ignore unread_keys(false).
  Vae(const VaeConfig& config, const nn::Weights& wb, bool with_encoder = true);
  // Checkpoint keys such a Vae does not read, for CheckpointSource's ignore list.
  static std::vector<std::string> unread_keys(bool with_encoder);

  const VaeConfig& config() const { return config_; }
  int64_t scale_factor() const { return config_.scale_factor(); }
  bool has_encoder() const { return encoder_ != nullptr; }

  // [B, L, h, w] -> [B, out_channels, h*sf, w*sf]: post_quant_conv then the decoder, raw output
  // (about [-1, 1], not clamped). Runs in the weights' dtype and device (the input is moved there).
  // `vae_parallel` (VAE-P, lib/parallel/rows.h): its ranks, all passing the same z, each decode a band of
  // the rows and all return the whole image; null: this process decodes everything.
  at::Tensor decode(const at::Tensor& z, comm::Communicator* vae_parallel = nullptr) const;
  // [B, in_channels, H, W] in [-1, 1] -> [B, L, floor(H/sf), floor(W/sf)]: encoder then quant_conv; the
  // mean of the posterior (its mode, upstream's `retrieve_latents(..., "argmax")`), which is what the
  // pipeline uses for reference images. Runs in the weights' dtype and device (the input is moved there);
  // returns that dtype. `vae_parallel` (VAE-P): its ranks, all passing the same image, each encode the
  // rows of a band of latent rows and all return the whole latent; null: this process encodes everything.
  at::Tensor encode_mean(const at::Tensor& image, comm::Communicator* vae_parallel = nullptr) const;

  // [B, 4L, h, w] in z_p's dtype: z_p * sqrt(running_var + eps) + running_mean.
  at::Tensor bn_denormalize(const at::Tensor& z_p) const;
  // [B, 4L, h, w] in z_p's dtype: (z_p - running_mean) / sqrt(running_var + eps).
  at::Tensor bn_normalize(const at::Tensor& z_p) const;

  // flux2.md 3.7: packed latents [B, h*w, 4L] (token grid h x w) -> unpack -> BN denormalise ->
  // unpatchify -> decode -> (x * 0.5 + 0.5).clamp(0, 1), done in the latents' dtype.
  // Returns float32 [B, out_channels, 2*sf*h, 2*sf*w] in [0, 1].
  at::Tensor decode_to_image(const at::Tensor& packed_latents, int64_t h, int64_t w,
                             comm::Communicator* vae_parallel = nullptr) const;

  struct Encoder;  // defined in vae.cpp
  struct Decoder;

 private:
  std::pair<at::Tensor, at::Tensor> bn_stats(const at::Tensor& like) const;

  VaeConfig config_;
  at::ScalarType dtype_;
  at::Device device_;
  std::shared_ptr<const Encoder> encoder_;  // null without the encoder
  std::shared_ptr<const Decoder> decoder_;
  at::Tensor bn_mean_, bn_var_;  // [4L], weights dtype (as diffusers casts buffers)
};

}  // namespace ditgen::flux2
