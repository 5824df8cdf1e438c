#include "models/qwen_image/vae.h"

#include <fmt/ranges.h>

#include <cmath>
#include <optional>

#include "lib/io/json_fields.h"
#include "lib/io/safetensors.h"
#include "lib/nn/vae_blocks.h"
#include "lib/parallel/rows.h"
#include "lib/runtime/error.h"

namespace ditgen::qwen_image {

// ---------------------------------------------------------------------------------------------
// Config

VaeConfig VaeConfig::from_json(const nlohmann::json& j, const std::string& where) {
  DITGEN_CHECK(j.is_object(), "{}: the VAE config is not a JSON object", where);
  VaeConfig c;
  const io::JsonFields read(j, where);
  read("base_dim", c.base_dim);
  read("z_dim", c.z_dim);
  read("dim_mult", c.dim_mult);
  read("num_res_blocks", c.num_res_blocks);
  read("attn_scales", c.attn_scales);
  read("temperal_downsample", c.temperal_downsample);
  read("input_channels", c.input_channels);
  read("latents_mean", c.latents_mean);
  read("latents_std", c.latents_std);

  DITGEN_CHECK(c.base_dim > 0, "{}: key 'base_dim' must be positive, got {}", where, c.base_dim);
  DITGEN_CHECK(c.z_dim > 0, "{}: key 'z_dim' must be positive, got {}", where, c.z_dim);
  DITGEN_CHECK(c.input_channels > 0, "{}: key 'input_channels' must be positive, got {}", where,
               c.input_channels);
  DITGEN_CHECK(c.num_res_blocks >= 0, "{}: key 'num_res_blocks' must not be negative, got {}", where,
               c.num_res_blocks);
  DITGEN_CHECK(!c.dim_mult.empty(), "{}: key 'dim_mult' is empty", where);
  for (int64_t m : c.dim_mult)
    DITGEN_CHECK(m > 0, "{}: key 'dim_mult' has a non-positive entry {}", where, m);
  // Attention blocks inside the resolution stages exist upstream but no released config uses them.
  DITGEN_CHECK(c.attn_scales.empty(),
               "{}: key 'attn_scales' must be empty (got [{}]); attention at a resolution "
               "scale is not implemented",
               where, fmt::join(c.attn_scales, ", "));
  // One resampling stage between consecutive dim_mult levels, each with its temporal flag.
  DITGEN_CHECK(c.temperal_downsample.size() + 1 == c.dim_mult.size(),
               "{}: key 'temperal_downsample' has {} entries but dim_mult has {} (needs {})", where,
               c.temperal_downsample.size(), c.dim_mult.size(), c.dim_mult.size() - 1);
  DITGEN_CHECK(static_cast<int64_t>(c.latents_mean.size()) == c.z_dim,
               "{}: key 'latents_mean' has {} entries but z_dim is {}", where, c.latents_mean.size(),
               c.z_dim);
  DITGEN_CHECK(static_cast<int64_t>(c.latents_std.size()) == c.z_dim,
               "{}: key 'latents_std' has {} entries but z_dim is {}", where, c.latents_std.size(), c.z_dim);
  for (size_t i = 0; i < c.latents_std.size(); ++i)
    DITGEN_CHECK(c.latents_std[i] > 0 && std::isfinite(c.latents_std[i]),
                 "{}: key 'latents_std' entry {} must be positive, got {}", where, i, c.latents_std[i]);
  // Ignored on purpose: dropout (inference).
  return c;
}

// ---------------------------------------------------------------------------------------------
// Building blocks (qwen-image.md 3.2), all on one frame: [B, C, H, W]

namespace {

constexpr double kNormEps = 1e-12;  // F.normalize's floor on the L2 norm

using nn::Init;
using nn::Shard;
using nn::vae::Conv2d;
using nn::vae::linear;

// A CausalConv3d (weight [cout, cin, k, k, k]) applied to a single frame, as a 2D convolution with stride 1
// and "same" zero padding, its weight made 2D once, at load: the temporal padding is 2*(k/2) zero frames in
// front, so only the last tap sees the frame (3.2 "Single-frame consequence"; for k = 1 that is tap 0).
// Spatial zero padding k/2 as in the 3D conv.
Conv2d causal_conv(const nn::Weights& wb, int64_t cin, int64_t cout, int64_t k) {
  at::Tensor w = wb.get("weight", {cout, cin, k, k, k}, Shard::replicated(), Init::Linear);
  return {w.select(2, k - 1).contiguous(), wb.get("bias", {cout}, Shard::replicated(), Init::Bias), 1, k / 2};
}

// QwenImageRMS_norm: x / max(||x||_2 over channels, 1e-12) * sqrt(C) * gamma. Not a mean-square
// norm with an eps (7 item 13). Computed in fp32 and rounded once for bf16/fp16 inputs.
struct RmsNorm {
  at::Tensor scale;  // [C, 1, 1] float32: sqrt(C) * gamma

  // gamma is [C, 1, 1, 1] in the 3D blocks, [C, 1, 1] in the attention block (`images`).
  static RmsNorm load(const nn::Weights& wb, int64_t c, bool images = false) {
    const std::vector<int64_t> shape =
        images ? std::vector<int64_t>{c, 1, 1} : std::vector<int64_t>{c, 1, 1, 1};
    at::Tensor gamma = wb.get("gamma", shape, Shard::replicated(), Init::Norm);
    return {gamma.to(at::kFloat).view({c, 1, 1}) * std::sqrt(static_cast<double>(c))};
  }
  // [B, C, H, W] -> [B, C, H, W], a new tensor in x's dtype.
  at::Tensor operator()(const at::Tensor& x) const {
    const at::Tensor xf = x.to(at::kFloat);
    at::Tensor norm =
        at::linalg_vector_norm(xf, 2, at::IntArrayRef{1}, /*keepdim=*/true).clamp_min_(kNormEps);
    return at::div(xf, norm).mul_(scale).to(x.scalar_type());  // [B, C, H, W]
  }
  // silu(norm(x)), the SiLU applied in place on the fresh normalised tensor; per pixel, so a band of rows
  // under VAE-P needs nothing of its neighbours (`rows` is unused).
  at::Tensor silu(const at::Tensor& x, const parallel::RowSplit& /*rows*/ = {}) const {
    at::Tensor t = (*this)(x);
    at::silu_(t);
    return t;
  }
};

// ResidualBlock(in, out): shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))), k3 convs, a 1x1x1
// shortcut iff cin != cout.
using ResidualBlock = nn::vae::ResnetBlock<RmsNorm>;

ResidualBlock load_residual(const nn::Weights& wb, int64_t cin, int64_t cout) {
  ResidualBlock r{RmsNorm::load(wb.pp("norm1"), cin), RmsNorm::load(wb.pp("norm2"), cout),
                  causal_conv(wb.pp("conv1"), cin, cout, 3), causal_conv(wb.pp("conv2"), cout, cout, 3),
                  std::nullopt};
  if (cin != cout) r.conv_shortcut = causal_conv(wb.pp("conv_shortcut"), cin, cout, 1);
  return r;
}

// Mid-block AttentionBlock(C): one head of width C over the H*W pixels of the frame, residual kept.
// The 1x1 convs to_qkv / proj act as linears on [B, HW, C]; q, k, v are consecutive C-channel thirds.
struct MidAttention {
  RmsNorm norm;
  at::Tensor qkv_w, qkv_b, proj_w, proj_b;  // [3C, C], [3C], [C, C], [C]

  static MidAttention load(const nn::Weights& wb, int64_t c) {
    return {RmsNorm::load(wb.pp("norm"), c, /*images=*/true),
            wb.get("to_qkv.weight", {3 * c, c, 1, 1}, Shard::replicated(), Init::Linear).view({3 * c, c}),
            wb.get("to_qkv.bias", {3 * c}, Shard::replicated(), Init::Bias),
            wb.get("proj.weight", {c, c, 1, 1}, Shard::replicated(), Init::Linear).view({c, c}),
            wb.get("proj.bias", {c}, Shard::replicated(), Init::Bias)};
  }
  // [B, C, H, W] -> [B, C, H, W]. Under VAE-P the band's pixels attend to every pixel of the image: the
  // keys and values of all ranks are gathered (the mid block runs at the latent size).
  at::Tensor operator()(const at::Tensor& x, const parallel::RowSplit& rows = {}) const {
    const int64_t c = x.size(1), w = x.size(3);
    at::Tensor qkv = linear(norm(x).flatten(2).transpose(1, 2), qkv_w, qkv_b);  // [B, h*W, 3C]
    at::Tensor q = qkv.narrow(2, 0, c).unsqueeze(2);                            // [B, h*W, 1, C]
    at::Tensor kv = rows.all_rows(qkv.narrow(2, c, 2 * c), 1, w);               // [B, H*W, 2C]
    at::Tensor k = kv.narrow(2, 0, c).unsqueeze(2);
    at::Tensor v = kv.narrow(2, c, c).unsqueeze(2);
    return nn::vae::pixel_attention(q, k, v, proj_w, proj_b, x);  // [B, C, h, W]
  }
};

// The encoder's downsample2d/3d on one frame (`resample.1`, qwen-image.md 3.2): ZeroPad2d(0, 1, 0, 1) then
// a 3x3 stride-2 Conv2d (nn::vae::downsample_2x). downsample3d's time_conv acts only from the second chunk
// of frames on, so never for one frame (like the decoder's, it is left unread).
Conv2d load_downsample(const nn::Weights& wb, int64_t c) {
  return Conv2d::load(wb, c, c, 3, /*stride=*/2, 0);
}

// An encoder resolution stage: num_res_blocks residual blocks, then (all but the last stage) a downsample.
struct DownStage {
  std::vector<ResidualBlock> resnets;
  std::optional<Conv2d> downsample;
};

// An up block: num_res_blocks + 1 residual blocks, then (all but the last block) an upsampler.
struct UpBlock {
  std::vector<ResidualBlock> resnets;
  // upsample2d/3d's `resample.1` (a plain Conv2d): out -> out/2 after a nearest x2. upsample3d's time_conv
  // would double the frames but is skipped on the first chunk, i.e. always for one frame (3.2).
  std::optional<Conv2d> upsampler;
};

}  // namespace

struct Vae::Encoder {
  Conv2d conv_in;
  std::vector<DownStage> stages;
  ResidualBlock mid_resnet0;
  MidAttention mid_attention;
  ResidualBlock mid_resnet1;
  RmsNorm norm_out;
  Conv2d conv_out;
  Conv2d quant_conv;  // top-level key, 1x1x1

  // QwenImageEncoder3d for any config: dims = [base*m for m in [1] + dim_mult]; stage i maps dims[i] ->
  // dims[i+1] in its first residual block. Upstream numbers the stages' modules in one flat list
  // `down_blocks.k`: the residual blocks, then the downsample, stage after stage. conv_out gives 2*z_dim
  // channels (mean and log-variance); quant_conv keeps them.
  static Encoder load(const nn::Weights& wb, const VaeConfig& config) {
    const int64_t n = static_cast<int64_t>(config.dim_mult.size());
    std::vector<int64_t> dims = {config.base_dim};
    for (int64_t m : config.dim_mult) dims.push_back(config.base_dim * m);

    const nn::Weights e = wb.pp("encoder");
    const nn::Weights mid = e.pp("mid_block");
    const int64_t c = dims.back(), z2 = 2 * config.z_dim;
    Encoder enc{causal_conv(e.pp("conv_in"), config.input_channels, dims[0], 3),
                {},
                load_residual(mid.pp("resnets").pp(0), c, c),
                MidAttention::load(mid.pp("attentions").pp(0), c),
                load_residual(mid.pp("resnets").pp(1), c, c),
                RmsNorm::load(e.pp("norm_out"), c),
                causal_conv(e.pp("conv_out"), c, z2, 3),
                causal_conv(wb.pp("quant_conv"), z2, z2, 1)};
    int64_t k = 0;  // the flat down_blocks index
    for (int64_t i = 0; i < n; ++i) {
      // Only a residual block changes the width (upstream fails the same way without one).
      DITGEN_CHECK(config.num_res_blocks >= 1 || dims[i] == dims[i + 1],
                   "Qwen-Image VAE encoder: 'num_res_blocks' 0 cannot change the width {} -> {} ('dim_mult')",
                   dims[i], dims[i + 1]);
      DownStage stage;
      for (int64_t j = 0; j < config.num_res_blocks; ++j)
        stage.resnets.push_back(
            load_residual(e.pp("down_blocks").pp(k++), j == 0 ? dims[i] : dims[i + 1], dims[i + 1]));
      if (i + 1 < n)
        stage.downsample = load_downsample(e.pp("down_blocks").pp(k++).pp("resample").pp(1), dims[i + 1]);
      enc.stages.push_back(std::move(stage));
    }
    return enc;
  }

  // [B, 3, H, W] -> [B, 2*z_dim, H/sf, W/sf] (floor sizes): the moments after quant_conv. Under VAE-P
  // `rows` is a RowSplit::encoder() split of the image rows and every tensor here is this rank's band.
  at::Tensor operator()(const at::Tensor& image, parallel::RowSplit rows = {}) const {
    at::Tensor x = conv_in(image, rows);  // [B, dims[0], H, W]
    for (const auto& stage : stages) {
      for (const auto& r : stage.resnets) x = r(x, rows);
      if (stage.downsample) x = nn::vae::downsample_2x(*stage.downsample, std::move(x), rows);
    }
    x = mid_resnet1(mid_attention(mid_resnet0(x, rows), rows), rows);
    return quant_conv(conv_out(norm_out.silu(x), rows));
  }
};

struct Vae::Decoder {
  Conv2d post_quant_conv;  // top-level key, 1x1x1
  Conv2d conv_in;
  ResidualBlock mid_resnet0;
  MidAttention mid_attention;
  ResidualBlock mid_resnet1;
  std::vector<UpBlock> up_blocks;
  RmsNorm norm_out;
  Conv2d conv_out;

  // Channel bookkeeping for any config (qwen-image.md 9 item 3; 3.3 for the real one):
  // dims = [base*dim_mult[-1]] + [base*m for m in reversed(dim_mult)]; up block i maps
  // (i == 0 ? dims[0] : dims[i]/2) -> dims[i+1], since every upsampler conv halves the channels.
  static Decoder load(const nn::Weights& wb, const VaeConfig& config) {
    const int64_t n = static_cast<int64_t>(config.dim_mult.size());
    std::vector<int64_t> dims = {config.base_dim * config.dim_mult.back()};
    for (int64_t i = n - 1; i >= 0; --i) dims.push_back(config.base_dim * config.dim_mult[i]);

    const nn::Weights d = wb.pp("decoder");
    const nn::Weights mid = d.pp("mid_block");
    Decoder dec{causal_conv(wb.pp("post_quant_conv"), config.z_dim, config.z_dim, 1),
                causal_conv(d.pp("conv_in"), config.z_dim, dims[0], 3),
                load_residual(mid.pp("resnets").pp(0), dims[0], dims[0]),
                MidAttention::load(mid.pp("attentions").pp(0), dims[0]),
                load_residual(mid.pp("resnets").pp(1), dims[0], dims[0]),
                {},
                RmsNorm::load(d.pp("norm_out"), dims.back()),
                causal_conv(d.pp("conv_out"), dims.back(), config.input_channels, 3)};
    for (int64_t i = 0; i < n; ++i) {
      const int64_t cin = i == 0 ? dims[0] : dims[i] / 2, cout = dims[i + 1];
      const nn::Weights bw = d.pp("up_blocks").pp(i);
      UpBlock block;
      for (int64_t j = 0; j <= config.num_res_blocks; ++j)
        block.resnets.push_back(load_residual(bw.pp("resnets").pp(j), j == 0 ? cin : cout, cout));
      if (i + 1 < n)
        block.upsampler =
            Conv2d::load(bw.pp("upsamplers").pp(0).pp("resample").pp(1), cout, cout / 2, 3, 1, 1);
      dec.up_blocks.push_back(std::move(block));
    }
    return dec;
  }

  // [B, z_dim, h, w] -> [B, 3, h*sf, w*sf], unclamped; under VAE-P `rows` splits the latent rows and
  // every tensor here is this rank's band.
  at::Tensor operator()(const at::Tensor& z, parallel::RowSplit rows = {}) const {
    at::Tensor x = conv_in(post_quant_conv(z), rows);  // [B, dims[0], h, w]
    x = mid_resnet1(mid_attention(mid_resnet0(x, rows), rows), rows);
    for (const auto& block : up_blocks) {
      for (const auto& r : block.resnets) x = r(x, rows);
      // Nearest x2 (nearest-exact upstream: the same for a factor 2), then the conv.
      if (block.upsampler) x = nn::vae::upsample_2x(*block.upsampler, x, rows);
    }
    return conv_out(norm_out.silu(x), rows);
  }
};

// ---------------------------------------------------------------------------------------------
// Vae

std::vector<std::string> Vae::unread_keys(bool with_encoder) {
  // The encoder side never runs in a text-to-image pipeline. upsample3d's and downsample3d's time_conv
  // act only from the second frame (chunk) on (3.2), so for one frame they are dead weight: ignoring them
  // by suffix (any config) keeps their parameters (1.8M in the real decoder) off the device.
  std::vector<std::string> keys = {".time_conv.weight", ".time_conv.bias"};
  if (!with_encoder) keys.insert(keys.end(), {"encoder.", "quant_conv."});
  return keys;
}

Vae::Vae(const VaeConfig& config, const nn::Weights& wb, bool with_encoder)
    : config_(config),
      dtype_(wb.dtype()),
      device_(wb.device()),
      decoder_(std::make_shared<Decoder>(Decoder::load(wb, config_))),
      mean_(at::tensor(config_.latents_mean, at::kDouble).to(at::kFloat)),
      std_(at::tensor(config_.latents_std, at::kDouble).to(at::kFloat)) {
  if (with_encoder) encoder_ = std::make_shared<Encoder>(Encoder::load(wb, config_));
}

Vae::Posterior Vae::encode(const at::Tensor& image, comm::Communicator* vae_parallel) const {
  DITGEN_CHECK(encoder_ != nullptr, "Qwen-Image VAE encode: the VAE was loaded without its encoder");
  DITGEN_CHECK(image.dim() == 5 && image.size(1) == config_.input_channels,
               "Qwen-Image VAE encode: expected an image [B, {}, 1, H, W], got {}", config_.input_channels,
               io::shape_str(image.sizes()));
  DITGEN_CHECK(image.size(2) == 1,
               "Qwen-Image VAE encode: only one frame (an image) is supported, got {} frames in {}",
               image.size(2), io::shape_str(image.sizes()));
  const int64_t sf = scale_factor();
  DITGEN_CHECK(image.size(3) >= sf && image.size(4) >= sf,
               "Qwen-Image VAE encode: an image of {}x{} pixels is smaller than the VAE's factor {}",
               image.size(4), image.size(3), sf);
  // VAE-P: each rank encodes the image rows of a band of latent rows; every rank ends with all latents.
  const auto rows = parallel::RowSplit::encoder(vae_parallel, image.size(3), sf);
  at::Tensor moments;  // this rank's latent rows (none on a rank past the last one)
  if (rows.idle())
    moments = at::empty({image.size(0), 2 * config_.z_dim, 0, image.size(4) / sf},
                        image.options().device(device_).dtype(dtype_));
  else
    moments = (*encoder_)(rows.slice(image.select(2, 0), 2).to(device_, dtype_).contiguous(), rows);
  moments = rows.downscaled(sf).gather(moments, 2).unsqueeze(2);  // [B, 2*z_dim, 1, h, w]
  // DiagonalGaussianDistribution: (mean, logvar) along channels, logvar clamped to [-30, 20].
  at::Tensor logvar = moments.narrow(1, config_.z_dim, config_.z_dim).clamp(-30.0, 20.0);
  return {moments.narrow(1, 0, config_.z_dim).contiguous(), logvar.mul_(0.5).exp_()};
}

at::Tensor Vae::normalize(const at::Tensor& z) const {
  DITGEN_CHECK(z.dim() == 5 && z.size(1) == config_.z_dim,
               "Qwen-Image VAE normalize: expected latents [B, {}, T, h, w], got {}", config_.z_dim,
               io::shape_str(z.sizes()));
  const auto cast = [&](const at::Tensor& t) {
    return t.to(z.device(), z.scalar_type()).view({1, -1, 1, 1, 1});
  };
  // As QwenImageImg2ImgPipeline: the reciprocal of the stds is taken in z's dtype, then multiplied.
  return (z - cast(mean_)) * cast(std_).reciprocal();  // [B, z_dim, T, h, w]
}

at::Tensor Vae::decode(const at::Tensor& z, comm::Communicator* vae_parallel) const {
  DITGEN_CHECK(z.dim() == 5 && z.size(1) == config_.z_dim,
               "Qwen-Image VAE decode: expected latents [B, {}, 1, h, w], got {}", config_.z_dim,
               io::shape_str(z.sizes()));
  DITGEN_CHECK(z.size(2) == 1,
               "Qwen-Image VAE decode: only one latent frame (an image) is supported, got {} frames in {}",
               z.size(2), io::shape_str(z.sizes()));
  // VAE-P: each rank decodes a band of the latent rows; every rank ends with the whole image.
  const parallel::RowSplit rows(vae_parallel, z.size(3));
  const int64_t sf = scale_factor();
  at::Tensor x;  // this rank's rows of the image (none on a rank past the last latent row)
  if (rows.idle())
    x = at::empty({z.size(0), config_.input_channels, 0, z.size(4) * sf},
                  z.options().device(device_).dtype(dtype_));
  else
    x = (*decoder_)(rows.slice(z.select(2, 0), 2).to(device_, dtype_).contiguous(), rows);
  x = rows.scaled(sf).gather(x, 2);     // [B, 3, H, W]
  return x.clamp_(-1, 1).unsqueeze(2);  // [B, 3, 1, H, W]
}

at::Tensor Vae::denormalize(const at::Tensor& z) const {
  DITGEN_CHECK(z.dim() == 5 && z.size(1) == config_.z_dim,
               "Qwen-Image VAE denormalize: expected latents [B, {}, T, h, w], got {}", config_.z_dim,
               io::shape_str(z.sizes()));
  const auto cast = [&](const at::Tensor& t) {
    return t.to(z.device(), z.scalar_type()).view({1, -1, 1, 1, 1});
  };
  return z * cast(std_) + cast(mean_);  // [B, z_dim, T, h, w]
}

at::Tensor Vae::decode_to_image(const at::Tensor& z_normalised, comm::Communicator* vae_parallel) const {
  // 3.4 step 2: the pipeline casts to the VAE dtype before de-normalising.
  at::Tensor z = denormalize(z_normalised.to(device_, dtype_));  // [B, z_dim, 1, h, w]
  at::Tensor img = decode(z, vae_parallel).select(2, 0);         // [B, 3, H, W] in [-1, 1]
  return img.mul(0.5).add_(0.5).clamp_(0, 1).to(at::kFloat);     // in the VAE dtype, like the reference
}

}  // namespace ditgen::qwen_image
