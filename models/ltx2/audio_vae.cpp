#include "models/ltx2/audio_vae.h"

#include <fmt/ranges.h>

#include <cctype>
#include <cmath>
#include <optional>

#include "lib/io/json_fields.h"
#include "lib/io/safetensors.h"
#include "lib/nn/vae_blocks.h"
#include "lib/runtime/error.h"

namespace ditgen::ltx2 {

// ---------------------------------------------------------------------------------------------
// Config

namespace {

bool is_null(const nlohmann::json& j, const std::string& key) {
  auto it = j.find(key);
  return it != j.end() && it->is_null();
}

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

}  // namespace

AudioVaeConfig AudioVaeConfig::from_json(const nlohmann::json& j, const std::string& where) {
  DITGEN_CHECK(j.is_object(), "{}: the audio VAE config is not a JSON object", where);
  AudioVaeConfig c;
  const io::JsonFields read(j, where);
  read("base_channels", c.base_channels);
  read("output_channels", c.output_channels);
  read("ch_mult", c.ch_mult);
  read("num_res_blocks", c.num_res_blocks);
  read("latent_channels", c.latent_channels);
  read("sample_rate", c.sample_rate);
  read("mel_hop_length", c.mel_hop_length);
  // Upstream, a null mel_bins means "as many as the decoder makes"; no released config does that.
  DITGEN_CHECK(!is_null(j, "mel_bins"), "{}: key 'mel_bins' is null; set the number of mel bins", where);
  read("mel_bins", c.mel_bins);
  read("norm_type", c.norm_type);
  // Upstream, a null causality_axis means "none" (a non-causal decoder), not the default.
  c.causality_axis = is_null(j, "causality_axis")
                         ? "none"
                         : lower(io::json_get<std::string>(j, "causality_axis", c.causality_axis, where));
  read("is_causal", c.is_causal);
  const auto attn = io::json_get<std::vector<int64_t>>(j, "attn_resolutions", {}, where);
  const bool mid_attention = io::json_get<bool>(j, "mid_block_add_attention", false, where);
  const bool resamp_with_conv = io::json_get<bool>(j, "resamp_with_conv", true, where);

  DITGEN_CHECK(c.base_channels > 0, "{}: key 'base_channels' must be positive, got {}", where,
               c.base_channels);
  DITGEN_CHECK(c.output_channels > 0, "{}: key 'output_channels' must be positive, got {}", where,
               c.output_channels);
  DITGEN_CHECK(c.latent_channels > 0, "{}: key 'latent_channels' must be positive, got {}", where,
               c.latent_channels);
  DITGEN_CHECK(c.num_res_blocks >= 0, "{}: key 'num_res_blocks' must not be negative, got {}", where,
               c.num_res_blocks);
  DITGEN_CHECK(!c.ch_mult.empty() && c.ch_mult.size() < 16, "{}: key 'ch_mult' must have 1 to 15 entries, got {}",
               where, c.ch_mult.size());
  for (int64_t m : c.ch_mult)
    DITGEN_CHECK(m > 0, "{}: key 'ch_mult' has a non-positive entry {}", where, m);
  DITGEN_CHECK(c.sample_rate > 0, "{}: key 'sample_rate' must be positive, got {}", where, c.sample_rate);
  DITGEN_CHECK(c.mel_hop_length > 0, "{}: key 'mel_hop_length' must be positive, got {}", where,
               c.mel_hop_length);
  DITGEN_CHECK(c.mel_bins > 0 && c.mel_bins % AudioVaeConfig::kMelCompression == 0,
               "{}: key 'mel_bins' must be a positive multiple of {} (the latents' fixed mel compression), got {}",
               where, AudioVaeConfig::kMelCompression, c.mel_bins);
  // What this port implements (every released config): no attention, PixelNorm, causal in time.
  DITGEN_CHECK(attn.empty(),
               "{}: key 'attn_resolutions' must be null or empty (got [{}]); attention blocks in the "
               "up path are not implemented",
               where, fmt::join(attn, ", "));
  DITGEN_CHECK(!mid_attention,
               "{}: key 'mid_block_add_attention' must be false; the mid attention block is not implemented",
               where);
  DITGEN_CHECK(c.norm_type == "pixel", "{}: key 'norm_type' must be \"pixel\", got \"{}\" (GroupNorm is not "
               "implemented)", where, c.norm_type);
  DITGEN_CHECK(c.causality_axis == "height",
               "{}: key 'causality_axis' must be \"height\" (time is dim 2), got \"{}\"; other axes are not "
               "implemented",
               where, c.causality_axis);
  DITGEN_CHECK(c.is_causal, "{}: key 'is_causal' must be true; a non-causal audio VAE is not implemented", where);
  DITGEN_CHECK(resamp_with_conv, "{}: key 'resamp_with_conv' must be true; conv-less upsamplers are not "
               "implemented", where);
  // Ignored on purpose: in_channels, double_z, n_fft (the encoder side), resolution (unused),
  // dropout (inference).
  return c;
}

int64_t AudioVaeConfig::latent_length(int64_t num_frames, double fps) const {
  DITGEN_CHECK(num_frames > 0 && fps > 0, "audio latent length: need frames > 0 and fps > 0, got {} and {}",
               num_frames, fps);
  // The upstream order of operations: duration, then latents per second, then round().
  const double duration = static_cast<double>(num_frames) / fps;
  const double per_second =
      static_cast<double>(sample_rate) / static_cast<double>(mel_hop_length) / 4.0;
  return static_cast<int64_t>(std::nearbyint(duration * per_second));  // half-to-even
}

// ---------------------------------------------------------------------------------------------
// Building blocks (ltx2.md 5.1), all on [B, C, T, M] with time on dim 2

namespace {

constexpr double kPixelNormEps = 1e-6;

using nn::Init;
using nn::Shard;

using nn::cpu_reduced;  // reduced dtypes compute in fp32 on the CPU (lib/nn/vae_blocks.h)

// CausalConv2d (`<name>.conv`): zero padding (k-1)/2 left and the rest right on the mel axis,
// k-1 rows on top of the time axis and none below, then an unpadded Conv2d. A 1x1 has no padding.
struct CausalConv2d {
  at::Tensor weight, bias;  // [cout, cin, k, k], [cout]
  int64_t k = 1;

  static CausalConv2d load(const nn::Weights& wb, int64_t cin, int64_t cout, int64_t k) {
    const nn::Weights c = wb.pp("conv");
    return {c.get("weight", {cout, cin, k, k}, Shard::replicated(), Init::Linear),
            c.get("bias", {cout}, Shard::replicated(), Init::Bias), k};
  }
  // [B, cin, T, M] -> [B, cout, T, M]
  at::Tensor operator()(const at::Tensor& x) const {
    const bool reduced = cpu_reduced(x);
    at::Tensor in = reduced ? x.to(at::kFloat) : x;
    if (k > 1) in = at::constant_pad_nd(in, {(k - 1) / 2, (k - 1) - (k - 1) / 2, k - 1, 0});
    if (!reduced) return at::conv2d(in, weight, bias);
    return at::conv2d(in, weight.to(at::kFloat), bias.to(at::kFloat)).to(x.scalar_type());
  }
};

// PixelNorm: x / sqrt(mean(x^2 over channels) + 1e-6), no weights. Computed in fp32 and rounded
// once for bf16/fp16 inputs. Returns silu(norm(x)), the SiLU applied in place on the fresh tensor.
at::Tensor pixel_norm_silu(const at::Tensor& x) {
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor rms = xf.square().mean(1, /*keepdim=*/true).add_(kPixelNormEps).sqrt_();
  at::Tensor t = at::div(xf, rms);
  at::silu_(t);
  return t.to(x.scalar_type());  // [B, C, T, M]
}

// ResnetBlock(in, out) without time embedding: shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))). Named
// apart from vae.cpp's ResnetBlock: one unity batch may hold both files.
struct AudioResnetBlock {
  CausalConv2d conv1, conv2;
  std::optional<CausalConv2d> nin_shortcut;  // 1x1, iff cin != cout

  static AudioResnetBlock load(const nn::Weights& wb, int64_t cin, int64_t cout) {
    AudioResnetBlock r{CausalConv2d::load(wb.pp("conv1"), cin, cout, 3),
                       CausalConv2d::load(wb.pp("conv2"), cout, cout, 3), std::nullopt};
    if (cin != cout) r.nin_shortcut = CausalConv2d::load(wb.pp("nin_shortcut"), cin, cout, 1);
    return r;
  }
  // [B, cin, T, M] -> [B, cout, T, M]
  at::Tensor operator()(const at::Tensor& x) const {
    at::Tensor h = conv1(pixel_norm_silu(x));
    h = conv2(pixel_norm_silu(h));
    return nin_shortcut ? h.add_((*nin_shortcut)(x)) : h.add_(x);
  }
};

// One up level: num_res_blocks + 1 blocks, then (all levels but 0) an upsampler.
struct UpLevel {
  std::vector<AudioResnetBlock> blocks;
  std::optional<CausalConv2d> upsample;  // `upsample.conv`, C -> C
};

}  // namespace

struct AudioVae::Decoder {
  CausalConv2d conv_in;
  AudioResnetBlock mid_block_1, mid_block_2;  // mid.attn_1 is the identity (no mid attention)
  std::vector<UpLevel> up;               // index = level, as the checkpoint's `up.{level}`
  CausalConv2d conv_out;

  // Channel bookkeeping for any config: conv_in makes base * ch_mult[-1] channels; level l (run
  // from the last to 0) ends at base * ch_mult[l], its block 0 converting (with nin_shortcut).
  static Decoder load(const nn::Weights& wb, const AudioVaeConfig& config) {
    const int64_t n = static_cast<int64_t>(config.ch_mult.size());
    const int64_t top = config.base_channels * config.ch_mult.back();
    const nn::Weights d = wb.pp("decoder");
    Decoder dec{CausalConv2d::load(d.pp("conv_in"), config.latent_channels, top, 3),
                AudioResnetBlock::load(d.pp("mid").pp("block_1"), top, top),
                AudioResnetBlock::load(d.pp("mid").pp("block_2"), top, top),
                std::vector<UpLevel>(n),
                CausalConv2d::load(d.pp("conv_out"), config.base_channels * config.ch_mult[0],
                                   config.output_channels, 3)};
    int64_t cin = top;
    for (int64_t level = n - 1; level >= 0; --level) {
      const nn::Weights lw = d.pp("up").pp(level);
      const int64_t cout = config.base_channels * config.ch_mult[level];
      UpLevel& u = dec.up[level];
      for (int64_t j = 0; j <= config.num_res_blocks; ++j) {
        u.blocks.push_back(AudioResnetBlock::load(lw.pp("block").pp(j), cin, cout));
        cin = cout;
      }
      if (level != 0) u.upsample = CausalConv2d::load(lw.pp("upsample").pp("conv"), cout, cout, 3);
    }
    return dec;
  }

  // [B, latent_channels, L, M'] -> [B, output_channels, T, M' * 2^(n-1)], T = 2^(n-1) (L-1) + 1
  at::Tensor operator()(const at::Tensor& z) const {
    at::Tensor x = mid_block_2(mid_block_1(conv_in(z)));
    for (auto level = static_cast<int64_t>(up.size()) - 1; level >= 0; --level) {
      const UpLevel& u = up[level];
      for (const auto& b : u.blocks) x = b(x);
      if (u.upsample) {
        // Nearest x2 on both axes (exact in any dtype), the causal conv, then drop the first time
        // row: T -> 2T - 1.
        const std::vector<int64_t> size = {x.size(2) * 2, x.size(3) * 2};
        x = (*u.upsample)(at::upsample_nearest2d(x, size)).narrow(2, 1, size[0] - 1);
      }
    }
    return conv_out(pixel_norm_silu(x));
  }
};

// ---------------------------------------------------------------------------------------------
// AudioVae

std::vector<std::string> AudioVae::unread_keys() { return {"encoder."}; }

AudioVae::AudioVae(const AudioVaeConfig& config, const nn::Weights& wb)
    : config_(config),
      dtype_(wb.dtype()),
      device_(wb.device()),
      decoder_(std::make_shared<Decoder>(Decoder::load(wb, config_))),
      // Upstream registers both buffers with base_channels entries; in the real config that equals
      // the packed width 8 * 16 = 128 they are applied to (denormalize_packed checks).
      mean_(wb.get("latents_mean", {config_.base_channels}, nn::Shard::replicated(), nn::Init::Mean)),
      std_(wb.get("latents_std", {config_.base_channels}, nn::Shard::replicated(), nn::Init::Variance)) {}

at::Tensor AudioVae::decode(const at::Tensor& z) const {
  DITGEN_CHECK(z.dim() == 4 && z.size(1) == config_.latent_channels && z.size(2) > 0 && z.size(3) > 0,
               "LTX-2 audio VAE decode: expected latents [B, {}, L, M], got {}", config_.latent_channels,
               io::shape_str(z.sizes()));
  const int64_t frames = AudioVaeConfig::mel_frames(z.size(2));
  at::Tensor x = (*decoder_)(z.to(device_, dtype_).contiguous());  // [B, out, T, M]
  // Crop to [:, :, :4L-3, :mel_bins] and zero-pad what is short (a config with fewer than two
  // upsamplers makes fewer rows than the fixed 4L-3).
  x = x.narrow(2, 0, std::min(x.size(2), frames)).narrow(3, 0, std::min(x.size(3), config_.mel_bins));
  const int64_t pad_t = frames - x.size(2), pad_m = config_.mel_bins - x.size(3);
  if (pad_t > 0 || pad_m > 0) return at::constant_pad_nd(x, {0, pad_m, 0, pad_t});
  return x.contiguous();  // [B, output_channels, 4L-3, mel_bins]
}

at::Tensor AudioVae::denormalize_packed(const at::Tensor& packed) const {
  DITGEN_CHECK(packed.dim() == 3 && packed.size(2) == config_.packed_features(),
               "LTX-2 audio VAE denormalize: expected packed latents [B, L, {}], got {}",
               config_.packed_features(), io::shape_str(packed.sizes()));
  DITGEN_CHECK(mean_.numel() == packed.size(2),
               "LTX-2 audio VAE denormalize: latents_mean/std have {} entries (base_channels) but the packed "
               "latents have {} features (latent_channels * latent mel bins); upstream broadcasts them, "
               "which needs equal sizes",
               mean_.numel(), packed.size(2));
  const auto cast = [&](const at::Tensor& t) { return t.to(packed.device(), packed.scalar_type()); };
  return packed * cast(std_) + cast(mean_);  // [B, L, C*M']
}

at::Tensor AudioVae::unpack(const at::Tensor& packed) const {
  DITGEN_CHECK(packed.dim() == 3 && packed.size(2) == config_.packed_features(),
               "LTX-2 audio unpack: expected packed latents [B, L, {}], got {}", config_.packed_features(),
               io::shape_str(packed.sizes()));
  const int64_t b = packed.size(0), l = packed.size(1);
  return packed.reshape({b, l, config_.latent_channels, config_.latent_mel_bins()})
      .permute({0, 2, 1, 3})
      .contiguous();  // [B, C, L, M']
}

at::Tensor AudioVae::pack(const at::Tensor& z) const {
  DITGEN_CHECK(z.dim() == 4 && z.size(1) == config_.latent_channels && z.size(3) == config_.latent_mel_bins(),
               "LTX-2 audio pack: expected latents [B, {}, L, {}], got {}", config_.latent_channels,
               config_.latent_mel_bins(), io::shape_str(z.sizes()));
  return z.transpose(1, 2).reshape({z.size(0), z.size(2), config_.packed_features()});  // [B, L, C*M']
}

}  // namespace ditgen::ltx2
