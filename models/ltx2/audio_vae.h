#pragma once
// LTX-2's audio VAE decoder (diffusers `AutoencoderKLLTX2Audio`, docs/reference/ltx2.md 5.1): latent
// spectrogram [B, C, L, M'] -> stereo log-mel [B, 2, 4L-3, mel_bins], plus the packing and the
// de-normalisation the pipeline does around it (sections 1.3, 7).
//
// Parameter names equal the checkpoint keys: `decoder.*`, `latents_mean`, `latents_std`. A
// text-to-video pipeline never encodes, so `encoder.*` is not declared (see unread_keys()).
#include <ATen/ATen.h>

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lib/nn/weights.h"

namespace ditgen::ltx2 {

// audio_vae/config.json. Defaults are the real LTX-2.0 values (ltx2.md 5.1).
struct AudioVaeConfig {
  int64_t base_channels = 128;
  int64_t output_channels = 2;  // stereo
  std::vector<int64_t> ch_mult = {1, 2, 4};
  int64_t num_res_blocks = 2;  // the decoder has num_res_blocks + 1 blocks per level
  int64_t latent_channels = 8;
  int64_t mel_bins = 64;
  int64_t sample_rate = 16000;
  int64_t mel_hop_length = 160;
  // Checked but fixed: this port implements exactly these (from_json refuses anything else).
  std::string norm_type = "pixel";
  std::string causality_axis = "height";  // time is dim 2
  bool is_causal = true;

  // Throws naming `where` (the file) and the key on values this port does not implement (attention
  // blocks, a norm other than "pixel", a causality axis other than "height", non-causal, upsamplers
  // without conv) or that are inconsistent (non-positive sizes, mel_bins not divisible by the mel
  // downsampling).
  static AudioVaeConfig from_json(const nlohmann::json& j, const std::string& where);

  // Mel bins per latent row in the pipeline's packing: mel_bins / 4. Upstream fixes the mel (and time)
  // compression at 4 whatever ch_mult gives (`mel_compression_ratio`); the decoder output is cropped or
  // zero-padded to mel_bins, so a config whose upsamplers make another width still decodes.
  static constexpr int64_t kMelCompression = 4;
  int64_t latent_mel_bins() const { return mel_bins / kMelCompression; }
  // Packed feature width: latent_channels * latent_mel_bins (feature c * M' + m).
  int64_t packed_features() const { return latent_channels * latent_mel_bins(); }
  // Mel frames decoded from L latent rows: 4L - 3 (at least 1). The factor 4 is fixed upstream,
  // whatever ch_mult gives; the decoder output is cropped or zero-padded to it.
  static int64_t mel_frames(int64_t latent_length) { return std::max<int64_t>(4 * latent_length - 3, 1); }
  // Audio latent rows for a video: round(num_frames / fps * sample_rate / hop / 4), Python's
  // half-to-even rounding (5.1; 121 frames at 24 fps -> 126).
  int64_t latent_length(int64_t num_frames, double fps) const;
};

class AudioVae {
 public:
  // Declares the decoder and the latents_mean/std buffers under `wb` (the component root); the
  // caller tells its checkpoint source to ignore unread_keys().
  AudioVae(const AudioVaeConfig& config, const nn::Weights& wb);
  // Checkpoint key prefixes a decode-only AudioVae does not read: the encoder.
  static std::vector<std::string> unread_keys();

  const AudioVaeConfig& config() const { return config_; }

  // [B, latent_channels, L, M] de-normalised latents (M = latent_mel_bins in the pipeline; any width
  // decodes) -> mel [B, output_channels, 4L-3, mel_bins]. Runs in the weights' dtype and device (the input is moved there).
  at::Tensor decode(const at::Tensor& z) const;

  // Packed latents [B, L, latent_channels * latent_mel_bins] -> x * latents_std + latents_mean per
  // packed feature (c * M' + m), in the input's dtype and device.
  at::Tensor denormalize_packed(const at::Tensor& packed) const;

  // [B, L, C*M'] -> [B, C, L, M'] (feature c * M' + m), contiguous.
  at::Tensor unpack(const at::Tensor& packed) const;
  // [B, C, L, M'] -> [B, L, C*M'], the inverse of unpack.
  at::Tensor pack(const at::Tensor& z) const;

  int64_t latent_length(int64_t num_frames, double fps) const {
    return config_.latent_length(num_frames, fps);
  }

  struct Decoder;  // defined in audio_vae.cpp

 private:
  AudioVaeConfig config_;
  at::ScalarType dtype_;
  at::Device device_;
  std::shared_ptr<const Decoder> decoder_;
  at::Tensor mean_, std_;  // [base_channels] as stored, weights' dtype and device
};

}  // namespace ditgen::ltx2
