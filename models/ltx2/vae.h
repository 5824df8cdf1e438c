#pragma once
// LTX-2's video VAE (diffusers `AutoencoderKLLTX2Video`, docs/reference/ltx2.md section 4): the decoder,
// latents [B, 128, F, H, W] -> video [B, 3, 8F-7, 32H, 32W], plus the per-channel de-normalisation and
// the [0, 1] frames the pipeline makes around it; and the causal encoder (image-to-video), video
// [B, 3, 8F-7, 32H, 32W] -> the posterior mean [B, 128, F, H, W], with the normalisation.
//
// Parameter names equal the checkpoint keys: `decoder.*`, `encoder.*`, `latents_mean`, `latents_std`. A
// text-to-video pipeline never encodes, so by default `encoder.*` is not declared (see unread_keys()).
#include <ATen/ATen.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lib/comm/communicator.h"
#include "lib/nn/weights.h"

namespace ditgen::ltx2 {

// vae/config.json. Defaults are the real LTX-2.0 values (ltx2.md 4). Lists are in config order, as
// upstream: the decoder walks decoder_block_out_channels, decoder_layers_per_block,
// decoder_spatio_temporal_scaling, decoder_inject_noise, upsample_residual and upsample_factor reversed,
// but upsample_type forward; the encoder walks its lists forward.
struct VideoVaeConfig {
  // Encoder side: checked only when a VideoVae is built with its encoder (a decode-only load ignores it).
  int64_t in_channels = 3;
  std::vector<int64_t> block_out_channels = {256, 512, 1024, 2048};
  // Resnets per down block, then the mid block's.
  std::vector<int64_t> layers_per_block = {4, 6, 6, 2, 2};
  std::vector<bool> spatio_temporal_scaling = {true, true, true, true};
  std::vector<std::string> downsample_type = {"spatial", "temporal", "spatiotemporal", "spatiotemporal"};
  bool encoder_causal = true;
  std::string encoder_spatial_padding_mode = "zeros";  // "zeros" or "reflect"

  // Decoder side.
  int64_t out_channels = 3;
  int64_t latent_channels = 128;
  std::vector<int64_t> decoder_block_out_channels = {256, 512, 1024};
  // Resnets per block: [last up block, ..., first up block, mid block].
  std::vector<int64_t> decoder_layers_per_block = {5, 5, 5, 5};
  std::vector<bool> decoder_spatio_temporal_scaling = {true, true, true};
  std::vector<bool> decoder_inject_noise = {false, false, false, false};
  std::vector<std::string> upsample_type = {"spatiotemporal", "spatiotemporal", "spatiotemporal"};
  std::vector<bool> upsample_residual = {true, true, true};
  std::vector<int64_t> upsample_factor = {2, 2, 2};
  bool timestep_conditioning = false;
  int64_t patch_size = 4;
  int64_t patch_size_t = 1;
  double resnet_norm_eps = 1e-6;  // only the LayerNorm of an up block's channel-changing conv_in
  double scaling_factor = 1.0;
  bool decoder_causal = false;
  std::string decoder_spatial_padding_mode = "reflect";  // "reflect" or "zeros"

  // Throws naming `where` (the file) and the key on features LTX-2.0 does not use and this port does
  // not implement (timestep conditioning, noise injection, patch_size_t != 1, padding modes other
  // than zeros/reflect) and on inconsistent values (list lengths, channel counts that the upsample
  // factors or depth-to-space strides do not divide, compression ratios that disagree with the
  // decoder).
  static VideoVaeConfig from_json(const nlohmann::json& j, const std::string& where);

  // Pixels per latent pixel: patch_size * 2 per upsampler with a spatial stride (32 for LTX-2.0).
  int64_t spatial_ratio() const;
  // Frames per latent frame: patch_size_t * 2 per upsampler with a temporal stride (8 for LTX-2.0).
  int64_t temporal_ratio() const;
  // Pixel frames decoded from F latent frames: temporal_ratio * (F - 1) + 1 (each temporal
  // upsampler doubles and drops the first frame).
  int64_t pixel_frames(int64_t latent_frames) const { return temporal_ratio() * (latent_frames - 1) + 1; }

  // Throws naming `where` and the key on encoder settings this port does not implement (downsample_type
  // "conv", patch_size_t != 1) or that are inconsistent (list lengths, channel counts the downsamplers
  // cannot group).
  void check_encoder(const std::string& where) const;
  // The encoder's pixels per latent pixel: patch_size * 2 per downsampler with a spatial stride (32 for
  // LTX-2.0); image sizes must be multiples of it.
  int64_t encoder_spatial_ratio() const;
  // Latent frames the encoder makes of `frames` pixel frames: each temporal downsampler maps F to (F+1)/2
  // (it prepends frame 0); 0 when some downsampler would get an even count (upstream fails there).
  int64_t encoded_frames(int64_t frames) const;
};

class VideoVae {
 public:
  // Declares the decoder and the latents_mean/std buffers under `wb` (the component root), and with
  // `with_encoder` the encoder (its config is checked then); the caller tells its checkpoint source to
  // ignore unread_keys(with_encoder).
  VideoVae(const VideoVaeConfig& config, const nn::Weights& wb, bool with_encoder = false);
  // Checkpoint key prefixes such a VideoVae does not read: without the encoder, `encoder.`.
  static std::vector<std::string> unread_keys(bool with_encoder = false);
  bool has_encoder() const { return encoder_ != nullptr; }

  const VideoVaeConfig& config() const { return config_; }
  int64_t spatial_ratio() const { return config_.spatial_ratio(); }
  int64_t temporal_ratio() const { return config_.temporal_ratio(); }

  // [B, latent_channels, F, H, W] de-normalised latents -> [B, out_channels, F_px, H*sr, W*sr], the raw
  // decoder output as the reference `decode` returns it (not clamped). Runs in the weights' dtype and
  // device (the input is moved there), one sample at a time. `vae_parallel` (VAE-P, lib/parallel/rows.h):
  // its ranks, all passing the same z, each decode a band of the rows and all return the whole video;
  // null: this process decodes everything.
  at::Tensor decode(const at::Tensor& z, comm::Communicator* vae_parallel = nullptr) const;

  // [B, in_channels, F, H, W] in [-1, 1] -> [B, latent_channels, encoded_frames(F), H/er, W/er]
  // (er = encoder_spatial_ratio()): the encoder's posterior mean (its mode, upstream's
  // `retrieve_latents(..., "argmax")`), not normalised. Needs the encoder; runs in the weights' dtype and
  // device (the input is moved there) and returns that dtype. `vae_parallel` (VAE-P): its ranks, all
  // passing the same video, each encode the rows of a band of latent rows and all return the whole
  // latent; null: this process encodes everything.
  at::Tensor encode_mean(const at::Tensor& video, comm::Communicator* vae_parallel = nullptr) const;

  // [B, latent_channels, F, H, W] in z's dtype and device: z * latents_std / scaling_factor +
  // latents_mean per channel (ltx2.md 4, decode step 1).
  at::Tensor denormalize(const at::Tensor& z) const;
  // [B, latent_channels, F, H, W] in z's dtype and device: (z - latents_mean) * scaling_factor /
  // latents_std per channel, the pipelines' _normalize_latents. Upstream's image-to-video pipeline
  // passes no scaling factor (1.0) where it normalises the encoded image, hence the argument.
  at::Tensor normalize(const at::Tensor& z, double scaling_factor = 1.0) const;

  // The pipeline's decode: normalised latents -> denormalize (in z's dtype) -> decode (VAE dtype) ->
  // clamp(x * 0.5 + 0.5, 0, 1) in the VAE dtype -> frames-major float32 [B, F_px, 3, H_px, W_px] in
  // [0, 1] (diffusers' "pt" output), on the VAE's device.
  at::Tensor decode_to_frames(const at::Tensor& z_normalised, comm::Communicator* vae_parallel = nullptr) const;

  struct Encoder;  // defined in vae.cpp
  struct Decoder;

 private:
  VideoVaeConfig config_;
  at::ScalarType dtype_;
  at::Device device_;
  std::shared_ptr<const Encoder> encoder_;  // null without the encoder
  std::shared_ptr<const Decoder> decoder_;
  at::Tensor mean_, std_;  // [latent_channels] as stored, weights' dtype and device
};

// The two sub-pixel orders of the decoder, exposed for tests.
//
// Upsampler depth-to-space: [B, C*st*sh*sw, F, H, W] (channel c*st*sh*sw + t*sh*sw + h*sw + w) ->
// [B, C, F*st - (st-1), H*sh, W*sw]: frame f*st + t, row y*sh + h, column x*sw + w, then the first
// st - 1 frames dropped (ltx2.md 9 item 12). A view of a fresh tensor.
at::Tensor video_depth_to_space(const at::Tensor& x, int64_t st, int64_t sh, int64_t sw);
// Encoder space-to-depth (its downsamplers): [B, C, F*st, H*sh, W*sw] -> [B, C*st*sh*sw, F, H, W] with
// channel ((c*st + t)*sh + h)*sw + w taking frame f*st + t, row y*sh + h, column x*sw + w. Contiguous.
at::Tensor video_space_to_depth(const at::Tensor& x, int64_t st, int64_t sh, int64_t sw);
// The encoder's first patchify, the inverse of video_unpatchify: [B, C, F, H*p, W*p] -> [B, C*p*p, F, H, W]
// with channel c*p*p + a*p + b taking row y*p + b, column x*p + a (a = width sub-position). Contiguous.
at::Tensor video_patchify(const at::Tensor& x, int64_t p);
// Final unpatchify: [B, C*p*p, F, H, W] (channel c*p*p + a*p + b, a = WIDTH sub-position, b = height
// sub-position) -> [B, C, F, H*p, W*p] with out[c, f, y*p + b, x*p + a] (ltx2.md 4 step 3). Contiguous.
at::Tensor video_unpatchify(const at::Tensor& x, int64_t p);

}  // namespace ditgen::ltx2
