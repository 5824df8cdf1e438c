#include "models/flux2/vae.h"

#include <fmt/ranges.h>

#include <optional>

#include "lib/io/json_fields.h"
#include "lib/io/safetensors.h"
#include "lib/nn/vae_blocks.h"
#include "lib/parallel/rows.h"
#include "lib/runtime/error.h"

namespace ditgen::flux2 {

// ---------------------------------------------------------------------------------------------
// Config

namespace {

// A positive integer list, or a single integer repeated `n` times (diffusers accepts both for
// patch_size / sample_size).
std::vector<int64_t> int_or_list(const nlohmann::json& j, const std::string& key,
                                 std::vector<int64_t> fallback, size_t n, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_number_integer()) return std::vector<int64_t>(n, it->get<int64_t>());
  return io::json_get<std::vector<int64_t>>(j, key, fallback, where);
}

// `key` must be absent or a list of `expected` strings, one per block.
void check_block_types(const nlohmann::json& j, const std::string& key, const std::string& expected,
                       size_t blocks, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  auto types = io::json_get<std::vector<std::string>>(j, key, {}, where);
  DITGEN_CHECK(types.size() == blocks, "{}: key '{}' has {} entries but block_out_channels has {}", where,
               key, types.size(), blocks);
  for (size_t i = 0; i < types.size(); ++i)
    DITGEN_CHECK(types[i] == expected, "{}: key '{}' entry {} is '{}'; only {} is supported", where, key, i,
                 types[i], expected);
}

}  // namespace

VaeConfig VaeConfig::from_json(const nlohmann::json& j, const std::string& where) {
  DITGEN_CHECK(j.is_object(), "{}: the VAE config is not a JSON object", where);
  VaeConfig c;
  const io::JsonFields read(j, where);
  read("in_channels", c.in_channels);
  read("out_channels", c.out_channels);
  read("block_out_channels", c.block_out_channels);
  read("layers_per_block", c.layers_per_block);
  read("latent_channels", c.latent_channels);
  read("norm_num_groups", c.norm_num_groups);
  read("use_quant_conv", c.use_quant_conv);
  read("use_post_quant_conv", c.use_post_quant_conv);
  read("mid_block_add_attention", c.mid_block_add_attention);
  read("batch_norm_eps", c.batch_norm_eps);
  c.patch_size = int_or_list(j, "patch_size", c.patch_size, 2, where);
  c.sample_size = int_or_list(j, "sample_size", {c.sample_size}, 1, where).at(0);

  const size_t blocks = c.block_out_channels.size();
  DITGEN_CHECK(blocks >= 1, "{}: key 'block_out_channels' is empty", where);
  DITGEN_CHECK(c.in_channels > 0, "{}: key 'in_channels' must be positive, got {}", where, c.in_channels);
  DITGEN_CHECK(c.out_channels > 0, "{}: key 'out_channels' must be positive, got {}", where, c.out_channels);
  DITGEN_CHECK(c.latent_channels > 0, "{}: key 'latent_channels' must be positive, got {}", where,
               c.latent_channels);
  DITGEN_CHECK(c.layers_per_block >= 1, "{}: key 'layers_per_block' must be at least 1, got {}", where,
               c.layers_per_block);
  DITGEN_CHECK(c.norm_num_groups > 0, "{}: key 'norm_num_groups' must be positive, got {}", where,
               c.norm_num_groups);
  DITGEN_CHECK(c.batch_norm_eps > 0, "{}: key 'batch_norm_eps' must be positive, got {}", where, c.batch_norm_eps);
  for (int64_t ch : c.block_out_channels)
    DITGEN_CHECK(ch > 0 && ch % c.norm_num_groups == 0,
                 "{}: key 'block_out_channels' value {} is not a positive multiple of norm_num_groups {}",
                 where, ch, c.norm_num_groups);
  DITGEN_CHECK(c.batch_norm_eps >= 0, "{}: key 'batch_norm_eps' must not be negative, got {}", where,
               c.batch_norm_eps);
  // patchify/unpatchify and the pipeline's token grid are written for 2x2 patches.
  DITGEN_CHECK(c.patch_size == std::vector<int64_t>({2, 2}), "{}: key 'patch_size' must be [2, 2]; got [{}]",
               where, fmt::join(c.patch_size, ", "));

  check_block_types(j, "down_block_types", "DownEncoderBlock2D", blocks, where);
  check_block_types(j, "up_block_types", "UpDecoderBlock2D", blocks, where);
  const auto act = io::json_get<std::string>(j, "act_fn", "silu", where);
  DITGEN_CHECK(act == "silu", "{}: key 'act_fn' is '{}'; only 'silu' is supported", where, act);
  auto dboc = j.find("decoder_block_out_channels");
  if (dboc != j.end() && !dboc->is_null()) {
    auto d = io::json_get<std::vector<int64_t>>(j, "decoder_block_out_channels", {}, where);
    DITGEN_CHECK(d == c.block_out_channels,
                 "{}: key 'decoder_block_out_channels' differs from block_out_channels; not supported",
                 where);
  }
  // Ignored on purpose: force_upcast (Flux2Pipeline never upcasts), batch_norm_momentum (the BN is
  // never run), sample_size (only tiling would use it).
  return c;
}

// ---------------------------------------------------------------------------------------------
// Latent bookkeeping (flux2.md 3.6)

// ---------------------------------------------------------------------------------------------
// Building blocks (flux2.md 3.2)

namespace {

constexpr double kGroupNormEps = 1e-6;  // every GroupNorm of the VAE

using nn::cpu_reduced;
using nn::Init;
using nn::Shard;
using nn::vae::Conv2d;
using nn::vae::linear;

struct GroupNorm {
  at::Tensor weight, bias;  // [C]
  int64_t groups = 32;

  static GroupNorm load(const nn::Weights& wb, int64_t channels, int64_t groups) {
    return {wb.get("weight", {channels}, Shard::replicated(), Init::Norm),
            wb.get("bias", {channels}, Shard::replicated(), Init::Bias), groups};
  }
  // [B, C, H, W] -> [B, C, H, W], a new tensor. Under VAE-P the statistics span every rank's band.
  at::Tensor operator()(const at::Tensor& x, const parallel::RowSplit& rows = {}) const {
    // Statistics in fp32 (CUDA kernels do that themselves for bf16 inputs).
    if (!cpu_reduced(x)) return parallel::group_norm(x, groups, weight, bias, kGroupNormEps, rows);
    return parallel::group_norm(x.to(at::kFloat), groups, weight.to(at::kFloat), bias.to(at::kFloat),
                                kGroupNormEps, rows)
        .to(x.scalar_type());
  }
  // silu(GN(x)), the SiLU applied in place on the fresh normalised tensor.
  at::Tensor silu(const at::Tensor& x, const parallel::RowSplit& rows = {}) const {
    at::Tensor t = (*this)(x, rows);
    at::silu_(t);
    return t;
  }
};

// ResnetBlock2D without time embedding (group norms, 3x3 convs, a 1x1 shortcut iff cin != cout).
using ResnetBlock = nn::vae::ResnetBlock<GroupNorm>;

ResnetBlock load_resnet(const nn::Weights& wb, int64_t cin, int64_t cout, int64_t groups) {
  ResnetBlock r{GroupNorm::load(wb.pp("norm1"), cin, groups), GroupNorm::load(wb.pp("norm2"), cout, groups),
                Conv2d::load(wb.pp("conv1"), cin, cout, 3, 1, 1),
                Conv2d::load(wb.pp("conv2"), cout, cout, 3, 1, 1), std::nullopt};
  if (cin != cout) r.conv_shortcut = Conv2d::load(wb.pp("conv_shortcut"), cin, cout, 1, 1, 0);
  return r;
}

// Mid-block self-attention: one head of width C over the H*W pixels, residual kept.
struct MidAttention {
  GroupNorm group_norm;
  at::Tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;  // [C, C], [C]

  static MidAttention load(const nn::Weights& wb, int64_t c, int64_t groups) {
    auto w = [&](const std::string& name) {
      return wb.get(name + ".weight", {c, c}, Shard::replicated(), Init::Linear);
    };
    auto b = [&](const std::string& name) {
      return wb.get(name + ".bias", {c}, Shard::replicated(), Init::Bias);
    };
    return {GroupNorm::load(wb.pp("group_norm"), c, groups),
            w("to_q"),
            b("to_q"),
            w("to_k"),
            b("to_k"),
            w("to_v"),
            b("to_v"),
            w("to_out.0"),
            b("to_out.0")};
  }
  // [B, C, H, W] -> [B, C, H, W]. Under VAE-P the band's pixels attend to every pixel of the image: the
  // keys and values of all ranks are gathered (the mid block runs at the latent size).
  at::Tensor operator()(const at::Tensor& x, const parallel::RowSplit& rows = {}) const {
    const int64_t w = x.size(3);
    at::Tensor t = group_norm(x, rows).flatten(2).transpose(1, 2);      // [B, h*W, C]
    at::Tensor q = linear(t, q_w, q_b).unsqueeze(2);                    // [B, h*W, 1, C]
    at::Tensor k = rows.all_rows(linear(t, k_w, k_b), 1, w).unsqueeze(2);  // [B, H*W, 1, C]
    at::Tensor v = rows.all_rows(linear(t, v_w, v_b), 1, w).unsqueeze(2);
    t = at::Tensor();
    return nn::vae::pixel_attention(q, k, v, o_w, o_b, x);  // [B, C, h, W]
  }
};

// UNetMidBlock2D: resnet -> (attention) -> resnet, width C throughout.
struct MidBlock {
  ResnetBlock resnet0, resnet1;
  std::optional<MidAttention> attention;

  static MidBlock load(const nn::Weights& wb, int64_t c, int64_t groups, bool add_attention) {
    MidBlock m{load_resnet(wb.pp("resnets").pp(0), c, c, groups),
               load_resnet(wb.pp("resnets").pp(1), c, c, groups), std::nullopt};
    if (add_attention) m.attention = MidAttention::load(wb.pp("attentions").pp(0), c, groups);
    return m;
  }
  // [B, C, H, W] -> [B, C, H, W]
  at::Tensor operator()(const at::Tensor& x, const parallel::RowSplit& rows = {}) const {
    at::Tensor h = resnet0(x, rows);
    if (attention) h = (*attention)(h, rows);
    return resnet1(h, rows);
  }
};

// A DownEncoderBlock2D or UpDecoderBlock2D: resnets, then an optional resampling conv.
struct ResnetStage {
  std::vector<ResnetBlock> resnets;
  std::optional<Conv2d> resample;  // downsamplers.0.conv (stride 2, pad 0) / upsamplers.0.conv (pad 1)
};

}  // namespace

struct Vae::Encoder {
  Conv2d conv_in;
  std::vector<ResnetStage> down_blocks;
  MidBlock mid_block;
  GroupNorm conv_norm_out;
  Conv2d conv_out;
  std::optional<Conv2d> quant_conv;

  // [B, in, H, W] -> [B, 2L, H/sf, W/sf] (moments after quant_conv, floor sizes); under VAE-P `rows` is an
  // RowSplit::encoder() split of the image rows and every tensor here is this rank's band.
  at::Tensor operator()(const at::Tensor& image, parallel::RowSplit rows = {}) const {
    at::Tensor x = conv_in(image, rows);
    for (const auto& block : down_blocks) {
      for (const auto& r : block.resnets) x = r(x, rows);
      if (block.resample) x = nn::vae::downsample_2x(*block.resample, std::move(x), rows);
    }
    x = mid_block(x, rows);
    x = conv_out(conv_norm_out.silu(x, rows), rows);
    return quant_conv ? (*quant_conv)(x) : x;
  }
};

struct Vae::Decoder {
  std::optional<Conv2d> post_quant_conv;
  Conv2d conv_in;
  MidBlock mid_block;
  std::vector<ResnetStage> up_blocks;
  GroupNorm conv_norm_out;
  Conv2d conv_out;

  // [B, L, h, w] -> [B, out, h*sf, w*sf]; under VAE-P `rows` splits the latent rows and every tensor
  // here is this rank's band.
  at::Tensor operator()(const at::Tensor& z, parallel::RowSplit rows = {}) const {
    at::Tensor x = conv_in(post_quant_conv ? (*post_quant_conv)(z) : z, rows);
    x = mid_block(x, rows);
    for (const auto& block : up_blocks) {
      for (const auto& r : block.resnets) x = r(x, rows);
      if (block.resample) x = nn::vae::upsample_2x(*block.resample, x, rows);
    }
    return conv_out(conv_norm_out.silu(x, rows), rows);
  }
};

// ---------------------------------------------------------------------------------------------
// Vae

std::vector<std::string> Vae::unread_keys(bool with_encoder) {
  std::vector<std::string> keys = {".num_batches_tracked"};  // BatchNorm bookkeeping, never used
  if (!with_encoder) keys.insert(keys.end(), {"encoder.", "quant_conv."});
  return keys;
}

Vae::Vae(const VaeConfig& config, const nn::Weights& wb, bool with_encoder)
    : config_(config), dtype_(wb.dtype()), device_(wb.device()) {
  const auto& boc = config_.block_out_channels;
  const int64_t blocks = static_cast<int64_t>(boc.size());
  const int64_t groups = config_.norm_num_groups;
  const int64_t lat = config_.latent_channels;

  if (with_encoder) {
    const nn::Weights e = wb.pp("encoder");
    auto enc = std::make_shared<Encoder>(
        Encoder{Conv2d::load(e.pp("conv_in"), config_.in_channels, boc[0], 3, 1, 1),
                {},
                MidBlock::load(e.pp("mid_block"), boc.back(), groups, config_.mid_block_add_attention),
                GroupNorm::load(e.pp("conv_norm_out"), boc.back(), groups),
                Conv2d::load(e.pp("conv_out"), boc.back(), 2 * lat, 3, 1, 1),
                std::nullopt});
    int64_t cin = boc[0];
    for (int64_t i = 0; i < blocks; ++i) {
      const nn::Weights bw = e.pp("down_blocks").pp(i);
      ResnetStage stage;
      for (int64_t j = 0; j < config_.layers_per_block; ++j)
        stage.resnets.push_back(load_resnet(bw.pp("resnets").pp(j), j == 0 ? cin : boc[i], boc[i], groups));
      if (i + 1 < blocks)
        stage.resample = Conv2d::load(bw.pp("downsamplers").pp(0).pp("conv"), boc[i], boc[i], 3, 2, 0);
      enc->down_blocks.push_back(std::move(stage));
      cin = boc[i];
    }
    if (config_.use_quant_conv)
      enc->quant_conv = Conv2d::load(wb.pp("quant_conv"), 2 * lat, 2 * lat, 1, 1, 0);
    encoder_ = std::move(enc);
  }

  {
    const nn::Weights d = wb.pp("decoder");
    auto dec = std::make_shared<Decoder>(
        Decoder{std::nullopt,
                Conv2d::load(d.pp("conv_in"), lat, boc.back(), 3, 1, 1),
                MidBlock::load(d.pp("mid_block"), boc.back(), groups, config_.mid_block_add_attention),
                {},
                GroupNorm::load(d.pp("conv_norm_out"), boc[0], groups),
                Conv2d::load(d.pp("conv_out"), boc[0], config_.out_channels, 3, 1, 1)});
    if (config_.use_post_quant_conv)
      dec->post_quant_conv = Conv2d::load(wb.pp("post_quant_conv"), lat, lat, 1, 1, 0);
    // The decoder walks the channels in reverse with layers_per_block + 1 resnets per block and
    // upsamples after every block but the last (flux2.md 10 item 6).
    int64_t cin = boc.back();
    for (int64_t i = 0; i < blocks; ++i) {
      const int64_t cout = boc[blocks - 1 - i];
      const nn::Weights bw = d.pp("up_blocks").pp(i);
      ResnetStage stage;
      for (int64_t j = 0; j <= config_.layers_per_block; ++j)
        stage.resnets.push_back(load_resnet(bw.pp("resnets").pp(j), j == 0 ? cin : cout, cout, groups));
      if (i + 1 < blocks)
        stage.resample = Conv2d::load(bw.pp("upsamplers").pp(0).pp("conv"), cout, cout, 3, 1, 1);
      dec->up_blocks.push_back(std::move(stage));
      cin = cout;
    }
    decoder_ = std::move(dec);
  }

  // Only the buffers of the BatchNorm are used; kept in the weights' dtype like diffusers' buffers.
  const nn::Weights bn = wb.pp("bn");
  bn_mean_ = bn.get("running_mean", {config_.patched_channels()}, Shard::replicated(), Init::Mean);
  bn_var_ = bn.get("running_var", {config_.patched_channels()}, Shard::replicated(), Init::Variance);
}

at::Tensor Vae::decode(const at::Tensor& z, comm::Communicator* vae_parallel) const {
  DITGEN_CHECK(z.dim() == 4 && z.size(1) == config_.latent_channels,
               "VAE decode: expected latents [B, {}, h, w], got {}", config_.latent_channels,
               io::shape_str(z.sizes()));
  // VAE-P: each rank decodes a band of the latent rows; every rank ends with the whole image.
  const parallel::RowSplit rows(vae_parallel, z.size(2));
  const int64_t sf = scale_factor();
  at::Tensor band;  // this rank's rows of the image (none on a rank past the last latent row)
  if (rows.idle())
    band = at::empty({z.size(0), config_.out_channels, 0, z.size(3) * sf},
                     z.options().device(device_).dtype(dtype_));
  else
    band = (*decoder_)(rows.slice(z, 2).to(device_, dtype_).contiguous(), rows);
  return rows.scaled(sf).gather(band, 2);  // [B, out, h*sf, w*sf]
}

at::Tensor Vae::encode_mean(const at::Tensor& image, comm::Communicator* vae_parallel) const {
  DITGEN_CHECK(encoder_ != nullptr, "VAE encode: the VAE was loaded without its encoder");
  DITGEN_CHECK(image.dim() == 4 && image.size(1) == config_.in_channels,
               "VAE encode: expected an image [B, {}, H, W], got {}", config_.in_channels,
               io::shape_str(image.sizes()));
  const int64_t sf = scale_factor();
  DITGEN_CHECK(image.size(2) >= sf && image.size(3) >= sf,
               "VAE encode: an image of {}x{} pixels is smaller than the VAE's factor {}", image.size(3),
               image.size(2), sf);
  // VAE-P: each rank encodes the image rows of a band of latent rows; every rank ends with all latents.
  const auto rows = parallel::RowSplit::encoder(vae_parallel, image.size(2), sf);
  const auto latent_rows = rows.downscaled(sf);  // the split after every downsampler
  at::Tensor mean;  // this rank's latent rows of the posterior mean (none on a rank past the last row)
  if (rows.idle()) {
    mean = at::empty({image.size(0), config_.latent_channels, 0, image.size(3) / sf},
                     image.options().device(device_).dtype(dtype_));
  } else {
    const at::Tensor band = rows.slice(image, 2).to(device_, dtype_).contiguous();
    at::Tensor moments = (*encoder_)(band, rows);  // [B, 2L, h, w]
    // Posterior = (mean, logvar) along channels; the mean (= its mode) is the first half.
    mean = moments.narrow(1, 0, config_.latent_channels).contiguous();
  }
  return latent_rows.gather(mean, 2);  // [B, L, H/sf, W/sf]
}

namespace {
void check_patched(const at::Tensor& z_p, int64_t channels, const char* what) {
  DITGEN_CHECK(z_p.dim() == 4 && z_p.size(1) == channels,
               "{}: expected patchified latents [B, {}, h, w], got {}", what, channels,
               io::shape_str(z_p.sizes()));
}
}  // namespace

// The pipeline computes sqrt(running_var + eps) in the statistics' own dtype and then casts both
// statistics to the latents' dtype and device (flux2.md 3.5, 3.7). Returns {mean, std}, [1, 4L, 1, 1].
std::pair<at::Tensor, at::Tensor> Vae::bn_stats(const at::Tensor& like) const {
  const auto cast = [&](const at::Tensor& t) {
    return t.to(like.device(), like.scalar_type()).view({1, -1, 1, 1});
  };
  return {cast(bn_mean_), cast(at::sqrt(bn_var_ + config_.batch_norm_eps))};
}

at::Tensor Vae::bn_denormalize(const at::Tensor& z_p) const {
  check_patched(z_p, config_.patched_channels(), "VAE bn_denormalize");
  const auto [mean, std] = bn_stats(z_p);
  return z_p * std + mean;  // [B, 4L, h, w]
}

at::Tensor Vae::bn_normalize(const at::Tensor& z_p) const {
  check_patched(z_p, config_.patched_channels(), "VAE bn_normalize");
  const auto [mean, std] = bn_stats(z_p);
  return (z_p - mean) / std;  // [B, 4L, h, w]
}

at::Tensor Vae::decode_to_image(const at::Tensor& packed_latents, int64_t h, int64_t w,
                                comm::Communicator* vae_parallel) const {
  DITGEN_CHECK(packed_latents.dim() == 3 && packed_latents.size(2) == config_.patched_channels(),
               "VAE decode_to_image: expected packed latents [B, {}*{}, {}], got {}", h, w,
               config_.patched_channels(), io::shape_str(packed_latents.sizes()));
  at::Tensor z = nn::unpack_latents(packed_latents, h, w);          // [B, 4L, h, w]
  z = nn::unpatchify(bn_denormalize(z));                            // [B, L, 2h, 2w]
  at::Tensor img = decode(z, vae_parallel).to(packed_latents.scalar_type());  // [B, 3, 2h*sf, 2w*sf]
  img.mul_(0.5).add_(0.5).clamp_(0, 1);                         // in the latents' dtype, like the reference
  return img.to(at::kFloat);
}

}  // namespace ditgen::flux2
