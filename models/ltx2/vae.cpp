#include "models/ltx2/vae.h"

#include <fmt/ranges.h>

#include <optional>
#include <utility>

#include "lib/io/json_fields.h"
#include "lib/io/safetensors.h"
#include "lib/nn/vae_blocks.h"
#include "lib/parallel/rows.h"
#include "lib/runtime/error.h"

namespace ditgen::ltx2 {

// ---------------------------------------------------------------------------------------------
// Config

namespace {

// A list of `n` booleans, or one boolean repeated `n` times (diffusers accepts both).
std::vector<bool> bool_or_list(const nlohmann::json& j, const std::string& key, std::vector<bool> fallback,
                               size_t n, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_boolean()) return std::vector<bool>(n, it->get<bool>());
  return io::json_get<std::vector<bool>>(j, key, fallback, where);
}

// `down_block_types`, if given, must name LTX2VideoDownBlock3D for every block (the only type upstream has).
void down_block_types_ok(const nlohmann::json& j, const std::string& where) {
  auto it = j.find("down_block_types");
  if (it == j.end() || it->is_null()) return;
  for (const auto& t : io::json_get<std::vector<std::string>>(j, "down_block_types", {}, where))
    DITGEN_CHECK(t == "LTX2VideoDownBlock3D",
                 "{}: key 'down_block_types' has '{}'; only LTX2VideoDownBlock3D exists", where, t);
}

// One up block in decoder order (ltx2.md 4; upstream walks most config lists reversed).
struct UpBlockPlan {
  int64_t channels_in = 0;   // hidden channels entering the block
  int64_t channels_out = 0;  // after it
  bool conv_in = false;      // a channel-changing resnet first (upsample factor 1 only)
  bool upsample = false;
  int64_t st = 1, sh = 1, sw = 1;  // depth-to-space strides
  bool residual = false;
  int64_t factor = 1;
  int64_t layers = 0;
};

// Validates everything the decoder's structure depends on and lays the up blocks out. Errors name
// `where` and the key.
std::vector<UpBlockPlan> plan_up_blocks(const VideoVaeConfig& c, const std::string& where) {
  DITGEN_CHECK(c.latent_channels > 0, "{}: key 'latent_channels' must be positive, got {}", where,
               c.latent_channels);
  DITGEN_CHECK(c.out_channels > 0, "{}: key 'out_channels' must be positive, got {}", where, c.out_channels);
  DITGEN_CHECK(c.patch_size > 0, "{}: key 'patch_size' must be positive, got {}", where, c.patch_size);
  // Upstream's decoder makes out_channels * patch_size^2 channels and then unpatchifies p_t too, which
  // only works for 1; LTX-2.0 uses 1.
  DITGEN_CHECK(c.patch_size_t == 1, "{}: key 'patch_size_t' must be 1, got {}", where, c.patch_size_t);
  DITGEN_CHECK(c.resnet_norm_eps > 0, "{}: key 'resnet_norm_eps' must be positive, got {}", where,
               c.resnet_norm_eps);
  DITGEN_CHECK(c.scaling_factor > 0, "{}: key 'scaling_factor' must be positive, got {}", where,
               c.scaling_factor);
  DITGEN_CHECK(c.decoder_spatial_padding_mode == "reflect" || c.decoder_spatial_padding_mode == "zeros",
               "{}: key 'decoder_spatial_padding_mode' is '{}'; only 'reflect' and 'zeros' are supported",
               where, c.decoder_spatial_padding_mode);
  // Timestep conditioning and noise injection exist upstream but are off in LTX-2.0 (ltx2.md 4).
  DITGEN_CHECK(!c.timestep_conditioning,
               "{}: key 'timestep_conditioning' is true; the timestep-conditioned decoder is not used by "
               "LTX-2.0 and not implemented",
               where);

  const auto& boc = c.decoder_block_out_channels;
  const size_t n = boc.size();
  DITGEN_CHECK(n >= 1, "{}: key 'decoder_block_out_channels' is empty", where);
  for (int64_t ch : boc)
    DITGEN_CHECK(ch > 0, "{}: key 'decoder_block_out_channels' has a non-positive entry {}", where, ch);
  const auto check_len = [&](const char* key, size_t len, size_t want) {
    DITGEN_CHECK(len == want, "{}: key '{}' has {} entries but decoder_block_out_channels has {} (needs {})",
                 where, key, len, n, want);
  };
  check_len("decoder_layers_per_block", c.decoder_layers_per_block.size(), n + 1);
  check_len("decoder_spatio_temporal_scaling", c.decoder_spatio_temporal_scaling.size(), n);
  check_len("decoder_inject_noise", c.decoder_inject_noise.size(), n + 1);
  check_len("upsample_type", c.upsample_type.size(), n);
  check_len("upsample_residual", c.upsample_residual.size(), n);
  check_len("upsample_factor", c.upsample_factor.size(), n);
  for (int64_t l : c.decoder_layers_per_block)
    DITGEN_CHECK(l >= 0, "{}: key 'decoder_layers_per_block' has a negative entry {}", where, l);
  for (size_t i = 0; i < c.decoder_inject_noise.size(); ++i)
    DITGEN_CHECK(!c.decoder_inject_noise[i],
                 "{}: key 'decoder_inject_noise' entry {} is true; noise injection is not used by LTX-2.0 "
                 "and not implemented",
                 where, i);
  for (int64_t f : c.upsample_factor)
    DITGEN_CHECK(f > 0, "{}: key 'upsample_factor' has a non-positive entry {}", where, f);

  // Decoder order: block i reads entry n-1-i of the reversed lists, entry i of upsample_type.
  std::vector<UpBlockPlan> plan;
  int64_t ch = boc[n - 1];  // conv_in and the mid block
  for (size_t i = 0; i < n; ++i) {
    const size_t r = n - 1 - i;
    UpBlockPlan b;
    b.factor = c.upsample_factor[r];
    b.channels_in = ch;
    b.channels_out = boc[r] / b.factor;
    b.layers = c.decoder_layers_per_block[r];
    b.upsample = c.decoder_spatio_temporal_scaling[r];
    b.residual = c.upsample_residual[r];
    // Upstream builds conv_in for (ch / factor -> out) but feeds it `ch` channels: only factor 1 works.
    b.conv_in = ch / b.factor != b.channels_out;
    DITGEN_CHECK(!b.conv_in || b.factor == 1,
                 "{}: up block {} changes channels {} -> {} with upsample_factor {}; keys "
                 "'decoder_block_out_channels' and 'upsample_factor' must give factor 1 where the width changes",
                 where, i, ch, boc[r], b.factor);
    int64_t cur = b.conv_in ? b.channels_out : ch;
    if (b.upsample) {
      const std::string& type = c.upsample_type[i];
      if (type == "spatial") {
        b.sh = b.sw = 2;
      } else if (type == "temporal") {
        b.st = 2;
      } else if (type == "spatiotemporal") {
        b.st = b.sh = b.sw = 2;
      } else {
        fail("{}: key 'upsample_type' entry {} is '{}'; expected spatial, temporal or spatiotemporal", where, i,
             type);
      }
      const int64_t prod = b.st * b.sh * b.sw;
      DITGEN_CHECK(cur == b.channels_out * b.factor,
                   "{}: up block {}'s upsampler expects {} channels but gets {}; keys "
                   "'decoder_block_out_channels' and 'upsample_factor' disagree",
                   where, i, b.channels_out * b.factor, cur);
      DITGEN_CHECK(!b.residual || (prod % b.factor == 0 && cur % prod == 0),
                   "{}: up block {}: the residual depth-to-space of {} channels by {} repeated {}/{} times does "
                   "not give {} channels; check keys 'upsample_residual' and 'upsample_factor'",
                   where, i, cur, prod, prod, b.factor, b.channels_out);
      cur = b.channels_out;
    }
    DITGEN_CHECK(cur == b.channels_out,
                 "{}: up block {} runs its resnets at {} channels but gets {}; 'upsample_factor' must be 1 "
                 "where 'decoder_spatio_temporal_scaling' is false",
                 where, i, b.channels_out, cur);
    ch = b.channels_out;
    plan.push_back(b);
  }
  return plan;
}

// One encoder down block (ltx2.md 4): resnets at the incoming width, then an optional downsampler to
// block_out_channels[i] (space-to-depth by its strides, channels grouped by the mean).
struct DownBlockPlan {
  int64_t channels_in = 0, channels_out = 0;
  int64_t layers = 0;
  bool downsample = false;
  int64_t st = 1, sh = 1, sw = 1;
};

std::vector<DownBlockPlan> plan_down_blocks(const VideoVaeConfig& c, const std::string& where) {
  DITGEN_CHECK(c.in_channels > 0, "{}: key 'in_channels' must be positive, got {}", where, c.in_channels);
  DITGEN_CHECK(c.patch_size > 0 && c.patch_size_t == 1,
               "{}: the encoder needs a positive 'patch_size' and 'patch_size_t' 1, got {} and {}", where,
               c.patch_size, c.patch_size_t);
  DITGEN_CHECK(c.encoder_spatial_padding_mode == "zeros" || c.encoder_spatial_padding_mode == "reflect",
               "{}: key 'encoder_spatial_padding_mode' is '{}'; only 'zeros' and 'reflect' are supported",
               where, c.encoder_spatial_padding_mode);
  const auto& boc = c.block_out_channels;
  const size_t n = boc.size();
  DITGEN_CHECK(n >= 1, "{}: key 'block_out_channels' is empty", where);
  const auto check_len = [&](const char* key, size_t len, size_t want) {
    DITGEN_CHECK(len == want, "{}: key '{}' has {} entries but block_out_channels has {} (needs {})", where,
                 key, len, n, want);
  };
  check_len("layers_per_block", c.layers_per_block.size(), n + 1);
  check_len("spatio_temporal_scaling", c.spatio_temporal_scaling.size(), n);
  check_len("downsample_type", c.downsample_type.size(), n);
  for (int64_t l : c.layers_per_block)
    DITGEN_CHECK(l >= 0, "{}: key 'layers_per_block' has a negative entry {}", where, l);

  std::vector<DownBlockPlan> plan;
  int64_t ch = c.latent_channels;  // conv_in's output
  for (size_t i = 0; i < n; ++i) {
    DownBlockPlan b;
    b.channels_in = ch;
    b.channels_out = boc[i];
    b.layers = c.layers_per_block[i];
    b.downsample = c.spatio_temporal_scaling[i];
    DITGEN_CHECK(boc[i] > 0, "{}: key 'block_out_channels' has a non-positive entry {}", where, boc[i]);
    // Without a downsampler upstream's block keeps its width, yet the next one expects boc[i].
    DITGEN_CHECK(b.downsample || boc[i] == ch,
                 "{}: down block {} has no downsampler ('spatio_temporal_scaling' false) but changes the "
                 "width {} -> {} ('block_out_channels')",
                 where, i, ch, boc[i]);
    if (b.downsample) {
      const std::string& type = c.downsample_type[i];
      if (type == "spatial") {
        b.sh = b.sw = 2;
      } else if (type == "temporal") {
        b.st = 2;
      } else if (type == "spatiotemporal") {
        b.st = b.sh = b.sw = 2;
      } else {
        fail(
            "{}: key 'downsample_type' entry {} is '{}'; expected spatial, temporal or spatiotemporal "
            "(the strided 'conv' downsampler is not used by LTX-2 and not implemented)",
            where, i, type);
      }
      const int64_t prod = b.st * b.sh * b.sw;
      // conv: ch -> boc/prod channels; the residual groups ch*prod channels into boc means.
      DITGEN_CHECK(boc[i] % prod == 0 && (ch * prod) % boc[i] == 0,
                   "{}: down block {}'s downsampler cannot map {} channels to {} with strides {}x{}x{} (keys "
                   "'block_out_channels', 'downsample_type')",
                   where, i, ch, boc[i], b.st, b.sh, b.sw);
    }
    ch = boc[i];
    plan.push_back(b);
  }
  return plan;
}

}  // namespace

VideoVaeConfig VideoVaeConfig::from_json(const nlohmann::json& j, const std::string& where) {
  DITGEN_CHECK(j.is_object(), "{}: the video VAE config is not a JSON object", where);
  VideoVaeConfig c;
  const io::JsonFields read(j, where);
  read("out_channels", c.out_channels);
  read("latent_channels", c.latent_channels);
  read("decoder_block_out_channels", c.decoder_block_out_channels);
  read("decoder_layers_per_block", c.decoder_layers_per_block);
  // Upstream expands a single boolean to one entry per up block (per block and the mid block for noise).
  c.decoder_spatio_temporal_scaling =
      bool_or_list(j, "decoder_spatio_temporal_scaling", c.decoder_spatio_temporal_scaling,
                   c.decoder_layers_per_block.empty() ? 0 : c.decoder_layers_per_block.size() - 1, where);
  c.decoder_inject_noise =
      bool_or_list(j, "decoder_inject_noise", c.decoder_inject_noise, c.decoder_layers_per_block.size(), where);
  read("upsample_type", c.upsample_type);
  c.upsample_residual = bool_or_list(j, "upsample_residual", c.upsample_residual,
                                     c.decoder_layers_per_block.empty() ? 0 : c.decoder_layers_per_block.size() - 1,
                                     where);
  read("upsample_factor", c.upsample_factor);
  read("timestep_conditioning", c.timestep_conditioning);
  read("patch_size", c.patch_size);
  read("patch_size_t", c.patch_size_t);
  read("resnet_norm_eps", c.resnet_norm_eps);
  read("scaling_factor", c.scaling_factor);
  read("decoder_causal", c.decoder_causal);
  read("decoder_spatial_padding_mode", c.decoder_spatial_padding_mode);

  // The encoder's keys, checked by check_encoder() only when the encoder is built.
  read("in_channels", c.in_channels);
  read("block_out_channels", c.block_out_channels);
  read("layers_per_block", c.layers_per_block);
  c.spatio_temporal_scaling =
      bool_or_list(j, "spatio_temporal_scaling", c.spatio_temporal_scaling,
                   c.layers_per_block.empty() ? 0 : c.layers_per_block.size() - 1, where);
  read("downsample_type", c.downsample_type);
  read("encoder_causal", c.encoder_causal);
  read("encoder_spatial_padding_mode", c.encoder_spatial_padding_mode);
  down_block_types_ok(j, where);

  plan_up_blocks(c, where);  // throws on anything the decoder cannot be built from

  // The pipeline sizes latents with these; they must agree with the decoder we build.
  const auto check_ratio = [&](const char* key, int64_t ours) {
    const auto v = io::json_get<int64_t>(j, key, ours, where);
    DITGEN_CHECK(v == ours, "{}: key '{}' is {} but the decoder's upsamplers and patch size give {}", where, key,
                 v, ours);
  };
  check_ratio("spatial_compression_ratio", c.spatial_ratio());
  check_ratio("temporal_compression_ratio", c.temporal_ratio());
  return c;
}

void VideoVaeConfig::check_encoder(const std::string& where) const { plan_down_blocks(*this, where); }

int64_t VideoVaeConfig::encoder_spatial_ratio() const {
  int64_t r = patch_size;
  for (const auto& b : plan_down_blocks(*this, "LTX-2 video VAE config"))
    if (b.downsample) r *= b.sh;
  return r;
}

int64_t VideoVaeConfig::encoded_frames(int64_t frames) const {
  int64_t f = frames;
  for (const auto& b : plan_down_blocks(*this, "LTX-2 video VAE config")) {
    if (!b.downsample || b.st == 1) continue;
    if ((f + b.st - 1) % b.st != 0) return 0;
    f = (f + b.st - 1) / b.st;
  }
  return f;
}

int64_t VideoVaeConfig::spatial_ratio() const {
  int64_t r = patch_size;
  for (const auto& b : plan_up_blocks(*this, "LTX-2 video VAE config"))
    if (b.upsample) r *= b.sh;
  return r;
}

int64_t VideoVaeConfig::temporal_ratio() const {
  int64_t r = patch_size_t;
  for (const auto& b : plan_up_blocks(*this, "LTX-2 video VAE config"))
    if (b.upsample) r *= b.st;
  return r;
}

// ---------------------------------------------------------------------------------------------
// Sub-pixel orders (ltx2.md 9 item 12)

at::Tensor video_depth_to_space(const at::Tensor& x, int64_t st, int64_t sh, int64_t sw) {
  const int64_t prod = st * sh * sw;
  DITGEN_CHECK(x.dim() == 5 && x.size(1) % prod == 0,
               "LTX-2 video VAE depth-to-space: expected [B, C*{}, F, H, W], got {}", prod,
               io::shape_str(x.sizes()));
  const int64_t b = x.size(0), c = x.size(1) / prod, f = x.size(2), h = x.size(3), w = x.size(4);
  at::Tensor y = x.reshape({b, c, st, sh, sw, f, h, w})
                     .permute({0, 1, 5, 2, 6, 3, 7, 4})  // [B, C, F, st, H, sh, W, sw]
                     .reshape({b, c, f * st, h * sh, w * sw});
  return y.narrow(2, st - 1, f * st - (st - 1));  // [B, C, F*st - (st-1), H*sh, W*sw]
}

at::Tensor video_space_to_depth(const at::Tensor& x, int64_t st, int64_t sh, int64_t sw) {
  DITGEN_CHECK(x.dim() == 5 && x.size(2) % st == 0 && x.size(3) % sh == 0 && x.size(4) % sw == 0,
               "LTX-2 video VAE space-to-depth: expected [B, C, F*{}, H*{}, W*{}], got {}", st, sh, sw,
               io::shape_str(x.sizes()));
  const int64_t b = x.size(0), c = x.size(1), f = x.size(2) / st, h = x.size(3) / sh, w = x.size(4) / sw;
  return x.reshape({b, c, f, st, h, sh, w, sw})
      .permute({0, 1, 3, 5, 7, 2, 4, 6})  // [B, C, st, sh, sw, F, H, W]
      .reshape({b, c * st * sh * sw, f, h, w})
      .contiguous();
}

at::Tensor video_patchify(const at::Tensor& x, int64_t p) {
  DITGEN_CHECK(x.dim() == 5 && x.size(3) % p == 0 && x.size(4) % p == 0,
               "LTX-2 video VAE patchify: expected [B, C, F, H*{}, W*{}], got {}", p, p,
               io::shape_str(x.sizes()));
  const int64_t b = x.size(0), c = x.size(1), f = x.size(2), h = x.size(3) / p, w = x.size(4) / p;
  return x
      .reshape({b, c, f, h, p, w, p})  // [B, C, F, H, b (height), W, a (width)]
      .permute({0, 1, 6, 4, 2, 3, 5})  // [B, C, a, b, F, H, W]
      .reshape({b, c * p * p, f, h, w})
      .contiguous();
}

at::Tensor video_unpatchify(const at::Tensor& x, int64_t p) {
  DITGEN_CHECK(x.dim() == 5 && x.size(1) % (p * p) == 0,
               "LTX-2 video VAE unpatchify: expected [B, C*{}, F, H, W], got {}", p * p, io::shape_str(x.sizes()));
  const int64_t b = x.size(0), c = x.size(1) / (p * p), f = x.size(2), h = x.size(3), w = x.size(4);
  return x.reshape({b, c, p, p, f, h, w})           // [B, C, a (width), b (height), F, H, W]
      .permute({0, 1, 4, 5, 3, 6, 2})                // [B, C, F, H, b, W, a]
      .reshape({b, c, f, h * p, w * p})
      .contiguous();
}

// ---------------------------------------------------------------------------------------------
// Building blocks (ltx2.md 4), on [B, C, F, H, W]

namespace {

constexpr double kRmsEps = 1e-8;  // PerChannelRMSNorm (ltx2.md 9 item 13)

using nn::Init;
using nn::Shard;

using nn::cpu_reduced;  // reduced dtypes compute in fp32 on the CPU (lib/nn/vae_blocks.h)

// [B, cin, F, H, W] -> [B, cout, F, H, W], stride 1, no padding (the input arrives padded).
at::Tensor conv3d(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (!cpu_reduced(x)) return at::conv3d(x, w, b);
  return at::conv3d(x.to(at::kFloat), w.to(at::kFloat), b.to(at::kFloat)).to(x.scalar_type());
}

// The temporal and spatial padding of every k=3 CausalConv3d of the decoder (ltx2.md 4): frames
// replicated at the edges (causal: two copies of frame 0 in front; non-causal: one of the first frame
// in front and one of the last behind), then one pixel of reflect or zero padding around each frame.
// The padded input is built in one buffer: the caller writes the interior (a copy, or the normalised
// activation straight away), fill() completes the border. The two paddings act on different dims, so
// their order does not matter. Under VAE-P (`rows` split) a frame holds this rank's band of rows and
// the rows above and below it come from the neighbours (reflect or zeros only at the image's border).
struct ConvPad {
  bool causal = false;
  bool reflect = true;
  parallel::RowSplit rows;  // the current resolution's split (not split: one process)

  // [B, C, F+2, H+2, W+2] uninitialised, and the view x's values belong in.
  std::pair<at::Tensor, at::Tensor> alloc(const at::Tensor& x) const {
    const int64_t b = x.size(0), c = x.size(1), f = x.size(2), h = x.size(3), w = x.size(4);
    const int64_t image_h = rows.split() ? rows.rows() : h;
    DITGEN_CHECK(!reflect || (image_h >= 2 && w >= 2),
                 "LTX-2 video VAE: reflect padding needs at least 2x2 pixels per frame, got {}x{} (latents of "
                 "at least 2x2)",
                 image_h, w);
    at::Tensor full = at::empty({b, c, f + 2, h + 2, w + 2}, x.options());
    at::Tensor interior = full.narrow(2, front(), f).narrow(3, 1, h).narrow(4, 1, w);
    return {full, interior};
  }
  int64_t front() const { return causal ? 2 : 1; }

  void fill(at::Tensor& full) const {
    const int64_t t0 = front(), f = full.size(2) - 2, wp = full.size(4);
    at::Tensor mid = full.narrow(2, t0, f);
    // Rows over the interior columns (the neighbours' under VAE-P), then whole columns: the corners pad
    // both ways.
    rows.fill_halo(mid.narrow(4, 1, wp - 2), /*dim=*/3, /*halo=*/1,
                   reflect ? parallel::RowPad::Reflect : parallel::RowPad::Zeros);
    if (reflect) {
      mid.narrow(4, 0, 1).copy_(mid.narrow(4, 2, 1));
      mid.narrow(4, wp - 1, 1).copy_(mid.narrow(4, wp - 3, 1));
    } else {
      mid.narrow(4, 0, 1).zero_();
      mid.narrow(4, wp - 1, 1).zero_();
    }
    full.narrow(2, 0, t0).copy_(full.narrow(2, t0, 1));  // broadcast over the t0 front frames
    if (!causal) full.narrow(2, t0 + f, 1).copy_(full.narrow(2, t0 + f - 1, 1));
  }

  // The padded copy of x.
  at::Tensor copy(const at::Tensor& x) const {
    auto [full, interior] = alloc(x);
    interior.copy_(x);
    fill(full);
    return full;
  }

  // The padded silu(PerChannelRMSNorm(x)): x / sqrt(mean_c(x^2) + 1e-8) with the statistic in fp32
  // (a fused reduction on the GPU, no fp32 copy of x), written into the buffer in x's dtype.
  at::Tensor norm_silu(const at::Tensor& x) const {
    auto [full, interior] = alloc(x);
    at::Tensor inv = at::linalg_vector_norm(x, 2, at::IntArrayRef{1}, /*keepdim=*/true, at::kFloat);
    inv.square_().div_(static_cast<double>(x.size(1))).add_(kRmsEps).rsqrt_();  // [B, 1, F, H, W]
    at::mul_out(interior, x, inv);
    at::silu_(interior);
    fill(full);
    return full;
  }
};

// LTX2VideoCausalConv3d, k = 3, stride 1 (`<name>.conv.weight`, `<name>.conv.bias`).
struct CausalConv3d {
  at::Tensor weight, bias;  // [cout, cin, 3, 3, 3], [cout]

  static CausalConv3d load(const nn::Weights& wb, int64_t cin, int64_t cout) {
    const nn::Weights c = wb.pp("conv");
    return {c.get("weight", {cout, cin, 3, 3, 3}, Shard::replicated(), Init::Linear),
            c.get("bias", {cout}, Shard::replicated(), Init::Bias)};
  }
  // padded [B, cin, F+2, H+2, W+2] -> [B, cout, F, H, W]; the padded buffer is released on return.
  at::Tensor operator()(at::Tensor padded) const { return conv3d(padded, weight, bias); }
};

// LTX2VideoResnetBlock3d: x' = shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))). The shortcut is
// the identity when cin == cout (everywhere in LTX-2.0), else LayerNorm over channels + a 1x1x1 Conv3d.
struct ResnetBlock {
  CausalConv3d conv1, conv2;
  struct Shortcut {
    at::Tensor norm_weight, norm_bias;  // [cin]
    at::Tensor conv_weight, conv_bias;  // [cout, cin, 1, 1, 1], [cout]
    double eps;
  };
  std::optional<Shortcut> shortcut;

  static ResnetBlock load(const nn::Weights& wb, int64_t cin, int64_t cout, double eps) {
    ResnetBlock r{CausalConv3d::load(wb.pp("conv1"), cin, cout), CausalConv3d::load(wb.pp("conv2"), cout, cout),
                  std::nullopt};
    if (cin != cout)
      r.shortcut = Shortcut{wb.get("norm3.weight", {cin}, Shard::replicated(), Init::Norm),
                            wb.get("norm3.bias", {cin}, Shard::replicated(), Init::Bias),
                            wb.get("conv_shortcut.weight", {cout, cin, 1, 1, 1}, Shard::replicated(), Init::Linear),
                            wb.get("conv_shortcut.bias", {cout}, Shard::replicated(), Init::Bias), eps};
    return r;
  }

  // [B, cin, F, H, W] -> [B, cout, F, H, W]. At most x, one padded buffer and one conv output live.
  at::Tensor operator()(const at::Tensor& x, const ConvPad& pad) const {
    at::Tensor h = conv1(pad.norm_silu(x));
    at::Tensor padded = pad.norm_silu(h);
    h.reset();
    h = conv2(std::move(padded));
    if (!shortcut) return h.add_(x);
    const Shortcut& s = *shortcut;
    const bool reduced = cpu_reduced(x);
    const auto f = [&](const at::Tensor& t) { return reduced ? t.to(at::kFloat) : t; };
    at::Tensor n = at::layer_norm(f(x).movedim(1, -1), {x.size(1)}, f(s.norm_weight), f(s.norm_bias), s.eps)
                       .movedim(-1, 1);
    n = at::conv3d(n, f(s.conv_weight), f(s.conv_bias));
    return h.add_(n);
  }
};

// LTX2VideoUpsampler3d (ltx2.md 4): conv cin -> cin*prod/factor channels, depth-to-space, first st-1
// frames dropped; with `residual`, the input's own depth-to-space tiled over the channels is added.
struct Upsampler {
  CausalConv3d conv;
  int64_t st = 2, sh = 2, sw = 2;
  int64_t factor = 2;
  bool residual = true;

  // [B, cin, F, H, W] -> [B, cin/factor, F*st - (st-1), H*sh, W*sw]; x is released once padded.
  at::Tensor operator()(at::Tensor x, const ConvPad& pad) const {
    at::Tensor res;  // [B, cin/prod, F', H', W']
    if (residual) res = video_depth_to_space(x, st, sh, sw);
    at::Tensor padded = pad.copy(x);
    x.reset();
    at::Tensor h = video_depth_to_space(conv(std::move(padded)), st, sh, sw);  // [B, cout, F', H', W']
    if (residual) {
      // Output channel j takes residual channel j mod (cin/prod): view the channels as (repeat, cin/prod).
      const int64_t cr = res.size(1), reps = h.size(1) / cr;
      h.view({h.size(0), reps, cr, h.size(2), h.size(3), h.size(4)}).add_(res.unsqueeze(1));
    }
    return h;
  }
};

// LTX2VideoDownsampler3d (ltx2.md 4): the first st-1 frames prepended (frame 0 for st = 2); the causal
// conv cin -> cout/prod channels then space-to-depth, plus the input's own space-to-depth with its channels
// averaged in consecutive groups of cin*prod/cout.
struct Downsampler {
  CausalConv3d conv;
  int64_t st = 1, sh = 2, sw = 2;
  int64_t group = 1;

  // [B, cin, F, H, W] -> [B, cout, (F+st-1)/st, H/sh, W/sw]. Under VAE-P the band starts on a multiple of
  // sh rows and holds a multiple of them, so the space-to-depth stays on the rank.
  at::Tensor operator()(const at::Tensor& x, const ConvPad& pad) const {
    const at::Tensor in = st > 1 ? at::cat({x.narrow(2, 0, st - 1), x}, 2) : x;
    at::Tensor residual = video_space_to_depth(in, st, sh, sw);                   // [B, cin*prod, F', H', W']
    residual = residual.unflatten(1, {residual.size(1) / group, group}).mean(2);  // [B, cout, F', H', W']
    at::Tensor h = video_space_to_depth(conv(pad.copy(in)), st, sh, sw);          // [B, cout, F', H', W']
    return h.add_(residual);
  }
};

struct UpBlock {
  std::optional<ResnetBlock> conv_in;  // only where the width changes (never in LTX-2.0)
  std::optional<Upsampler> upsampler;
  std::vector<ResnetBlock> resnets;
};

}  // namespace

struct VideoVae::Decoder {
  ConvPad pad;
  int64_t patch_size = 4;
  CausalConv3d conv_in;
  std::vector<ResnetBlock> mid_resnets;
  std::vector<UpBlock> up_blocks;
  CausalConv3d conv_out;

  static Decoder load(const nn::Weights& wb, const VideoVaeConfig& config) {
    const auto plan = plan_up_blocks(config, "LTX-2 video VAE config");
    const auto& boc = config.decoder_block_out_channels;
    const int64_t c0 = boc.back(), n = static_cast<int64_t>(boc.size());
    const double eps = config.resnet_norm_eps;
    const nn::Weights d = wb.pp("decoder");

    Decoder dec{ConvPad{config.decoder_causal, config.decoder_spatial_padding_mode == "reflect", {}},
                config.patch_size,
                CausalConv3d::load(d.pp("conv_in"), config.latent_channels, c0),
                {},
                {},
                CausalConv3d::load(d.pp("conv_out"), plan.back().channels_out,
                                   config.out_channels * config.patch_size * config.patch_size)};
    const nn::Weights mid = d.pp("mid_block").pp("resnets");
    for (int64_t j = 0; j < config.decoder_layers_per_block[n]; ++j)
      dec.mid_resnets.push_back(ResnetBlock::load(mid.pp(j), c0, c0, eps));
    for (int64_t i = 0; i < n; ++i) {
      const UpBlockPlan& p = plan[i];
      const nn::Weights bw = d.pp("up_blocks").pp(i);
      UpBlock block;
      if (p.conv_in) block.conv_in = ResnetBlock::load(bw.pp("conv_in"), p.channels_in, p.channels_out, eps);
      if (p.upsample) {
        // Upsampler3d(in = out*factor): conv to in*prod/factor = out*prod channels.
        const int64_t cin = p.channels_out * p.factor, prod = p.st * p.sh * p.sw;
        block.upsampler = Upsampler{
            CausalConv3d::load(bw.pp("upsamplers").pp(0).pp("conv"), cin, p.channels_out * prod),
            p.st, p.sh, p.sw, p.factor, p.residual};
      }
      for (int64_t j = 0; j < p.layers; ++j)
        block.resnets.push_back(
            ResnetBlock::load(bw.pp("resnets").pp(j), p.channels_out, p.channels_out, eps));
      dec.up_blocks.push_back(std::move(block));
    }
    return dec;
  }

  // [B, latent, F, H, W] -> [B, out, F_px, H*sr, W*sr], unclamped; under VAE-P `rows` splits the latent
  // rows and every tensor here is this rank's band (the norms are per pixel).
  at::Tensor operator()(const at::Tensor& z, const parallel::RowSplit& rows = {}) const {
    ConvPad p = pad;  // this decode's padding, with the rows' split at the current resolution
    p.rows = rows;
    at::Tensor x = conv_in(p.copy(z));  // [B, c0, F, H, W]
    for (const auto& r : mid_resnets) x = r(x, p);
    for (const auto& block : up_blocks) {
      if (block.conv_in) x = (*block.conv_in)(x, p);
      if (block.upsampler) {
        x = (*block.upsampler)(std::move(x), p);
        p.rows = p.rows.scaled(block.upsampler->sh);  // each row became sh rows on its rank
      }
      for (const auto& r : block.resnets) x = r(x, p);
    }
    at::Tensor padded = p.norm_silu(x);  // norm_out + SiLU
    x.reset();
    x = conv_out(std::move(padded));  // [B, out*p*p, F_px, H', W']
    return video_unpatchify(x, patch_size);
  }
};

struct VideoVae::Encoder {
  ConvPad pad;
  int64_t patch_size = 4;
  CausalConv3d conv_in;
  struct DownBlock {
    std::vector<ResnetBlock> resnets;
    std::optional<Downsampler> downsampler;
  };
  std::vector<DownBlock> down_blocks;
  std::vector<ResnetBlock> mid_resnets;
  CausalConv3d conv_out;
  int64_t latent_channels = 128;

  static Encoder load(const nn::Weights& wb, const VideoVaeConfig& config) {
    const auto plan = plan_down_blocks(config, "LTX-2 video VAE config");
    const int64_t c_last = config.block_out_channels.back(), lat = config.latent_channels;
    const double eps = config.resnet_norm_eps;
    const nn::Weights e = wb.pp("encoder");
    // conv_out makes the latent means and ONE log-variance channel (repeated upstream to 2*latent).
    Encoder enc{
        ConvPad{config.encoder_causal, config.encoder_spatial_padding_mode == "reflect", {}},
        config.patch_size,
        CausalConv3d::load(e.pp("conv_in"), config.in_channels * config.patch_size * config.patch_size, lat),
        {},
        {},
        CausalConv3d::load(e.pp("conv_out"), c_last, lat + 1),
        lat};
    for (size_t i = 0; i < plan.size(); ++i) {
      const DownBlockPlan& p = plan[i];
      const nn::Weights bw = e.pp("down_blocks").pp(static_cast<int64_t>(i));
      DownBlock block;
      for (int64_t j = 0; j < p.layers; ++j)
        block.resnets.push_back(ResnetBlock::load(bw.pp("resnets").pp(j), p.channels_in, p.channels_in, eps));
      if (p.downsample) {
        const int64_t prod = p.st * p.sh * p.sw;
        block.downsampler = Downsampler{
            CausalConv3d::load(bw.pp("downsamplers").pp(0).pp("conv"), p.channels_in, p.channels_out / prod),
            p.st, p.sh, p.sw, p.channels_in * prod / p.channels_out};
      }
      enc.down_blocks.push_back(std::move(block));
    }
    const nn::Weights mid = e.pp("mid_block").pp("resnets");
    for (int64_t j = 0; j < config.layers_per_block.back(); ++j)
      enc.mid_resnets.push_back(ResnetBlock::load(mid.pp(j), c_last, c_last, eps));
    return enc;
  }

  // [B, in, F, H, W] -> [B, latent, F', H/er, W/er]: the posterior mean (conv_out's first `latent`
  // channels). Under VAE-P `rows` is a RowSplit::encoder() split of the pixel rows and every tensor here is
  // this rank's band (the norms are per pixel).
  at::Tensor operator()(const at::Tensor& video, const parallel::RowSplit& rows = {}) const {
    ConvPad p = pad;  // this encode's padding, with the rows' split at the current resolution
    p.rows = rows.downscaled(patch_size);
    at::Tensor x = conv_in(p.copy(video_patchify(video, patch_size)));  // [B, latent, F, H/p, W/p]
    for (const auto& block : down_blocks) {
      for (const auto& r : block.resnets) x = r(x, p);
      if (block.downsampler) {
        x = (*block.downsampler)(x, p);
        p.rows = p.rows.downscaled(block.downsampler->sh);
      }
    }
    for (const auto& r : mid_resnets) x = r(x, p);
    at::Tensor padded = p.norm_silu(x);  // norm_out + SiLU
    x.reset();
    return conv_out(std::move(padded)).narrow(1, 0, latent_channels).contiguous();
  }
};

// ---------------------------------------------------------------------------------------------
// VideoVae

std::vector<std::string> VideoVae::unread_keys(bool with_encoder) {
  // The encoder never runs in a text-to-video pipeline.
  if (with_encoder) return {};
  return {"encoder."};
}

VideoVae::VideoVae(const VideoVaeConfig& config, const nn::Weights& wb, bool with_encoder)
    : config_(config),
      dtype_(wb.dtype()),
      device_(wb.device()),
      decoder_(std::make_shared<Decoder>(Decoder::load(wb, config_))),
      // Buffers in the weights' dtype, as diffusers casts them with the module.
      mean_(wb.get("latents_mean", {config_.latent_channels}, Shard::replicated(), Init::Mean)),
      std_(wb.get("latents_std", {config_.latent_channels}, Shard::replicated(), Init::Variance)) {
  if (with_encoder) encoder_ = std::make_shared<Encoder>(Encoder::load(wb, config_));
}

at::Tensor VideoVae::encode_mean(const at::Tensor& video, comm::Communicator* vae_parallel) const {
  DITGEN_CHECK(encoder_ != nullptr, "LTX-2 video VAE encode: the VAE was loaded without its encoder");
  DITGEN_CHECK(video.dim() == 5 && video.size(1) == config_.in_channels,
               "LTX-2 video VAE encode: expected a video [B, {}, F, H, W], got {}", config_.in_channels,
               io::shape_str(video.sizes()));
  const int64_t er = config_.encoder_spatial_ratio(), frames = config_.encoded_frames(video.size(2));
  DITGEN_CHECK(video.size(3) % er == 0 && video.size(4) % er == 0 && video.size(3) > 0 && video.size(4) > 0,
               "LTX-2 video VAE encode: the height and width must be positive multiples of {}, got {}x{}", er,
               video.size(4), video.size(3));
  DITGEN_CHECK(frames > 0,
               "LTX-2 video VAE encode: {} frames do not pass the temporal downsamplers (1 + k*{})",
               video.size(2), config_.temporal_ratio());
  // VAE-P: each rank encodes the pixel rows of a band of latent rows; every rank ends with all latents.
  const auto rows = parallel::RowSplit::encoder(vae_parallel, video.size(3), er);
  at::Tensor band;  // this rank's latent rows (none on a rank past the last one)
  if (rows.idle())
    band = at::empty({video.size(0), config_.latent_channels, frames, 0, video.size(4) / er},
                     video.options().device(device_).dtype(dtype_));
  else
    band = (*encoder_)(rows.slice(video, 3).to(device_, dtype_).contiguous(), rows);
  return rows.downscaled(er).gather(band, 3);  // [B, latent, F', H/er, W/er]
}

at::Tensor VideoVae::normalize(const at::Tensor& z, double scaling_factor) const {
  DITGEN_CHECK(z.dim() == 5 && z.size(1) == config_.latent_channels,
               "LTX-2 video VAE normalize: expected latents [B, {}, F, H, W], got {}",
               config_.latent_channels, io::shape_str(z.sizes()));
  const auto cast = [&](const at::Tensor& t) {
    return t.to(z.device(), z.scalar_type()).view({1, -1, 1, 1, 1});
  };
  at::Tensor out = z - cast(mean_);
  if (scaling_factor != 1.0) out.mul_(scaling_factor);
  return out.div_(cast(std_));  // [B, C, F, H, W]
}

at::Tensor VideoVae::decode(const at::Tensor& z, comm::Communicator* vae_parallel) const {
  DITGEN_CHECK(z.dim() == 5 && z.size(1) == config_.latent_channels,
               "LTX-2 video VAE decode: expected latents [B, {}, F, H, W], got {}", config_.latent_channels,
               io::shape_str(z.sizes()));
  // VAE-P: each rank decodes a band of the latent rows; every rank ends with the whole video.
  const parallel::RowSplit rows(vae_parallel, z.size(3));
  const int64_t sr = spatial_ratio();
  const auto decode_rows = [&](const at::Tensor& zi) {  // [b, C, F, H, W] -> [b, out, F_px, H*sr, W*sr]
    at::Tensor band;  // this rank's rows of the video (none on a rank past the last latent row)
    if (rows.idle())
      band = at::empty({zi.size(0), config_.out_channels, config_.pixel_frames(zi.size(2)), 0, zi.size(4) * sr},
                       zi.options().device(device_).dtype(dtype_));
    else
      band = (*decoder_)(rows.slice(zi, 3).to(device_, dtype_), rows);
    return rows.scaled(sr).gather(band, 3);
  };
  const int64_t b = z.size(0);
  if (b == 1) return decode_rows(z);
  // One sample at a time bounds the activations to one video; the result is the same.
  at::Tensor out;
  for (int64_t i = 0; i < b; ++i) {
    at::Tensor x = decode_rows(z.narrow(0, i, 1));  // [1, 3, F_px, H_px, W_px]
    if (!out.defined()) {
      std::vector<int64_t> size = x.sizes().vec();
      size[0] = b;
      out = at::empty(size, x.options());
    }
    out.narrow(0, i, 1).copy_(x);
  }
  return out;  // [B, 3, F_px, H_px, W_px]
}

at::Tensor VideoVae::denormalize(const at::Tensor& z) const {
  DITGEN_CHECK(z.dim() == 5 && z.size(1) == config_.latent_channels,
               "LTX-2 video VAE denormalize: expected latents [B, {}, F, H, W], got {}", config_.latent_channels,
               io::shape_str(z.sizes()));
  const auto cast = [&](const at::Tensor& t) {
    return t.to(z.device(), z.scalar_type()).view({1, -1, 1, 1, 1});
  };
  at::Tensor out = z * cast(std_);
  if (config_.scaling_factor != 1.0) out.div_(config_.scaling_factor);
  return out.add_(cast(mean_));  // [B, C, F, H, W]
}

at::Tensor VideoVae::decode_to_frames(const at::Tensor& z_normalised, comm::Communicator* vae_parallel) const {
  at::Tensor x = decode(denormalize(z_normalised), vae_parallel);  // [B, 3, F, H, W], VAE dtype
  x.mul_(0.5).add_(0.5).clamp_(0, 1);                // in the VAE dtype, like the reference
  at::Tensor frames = at::empty({x.size(0), x.size(2), x.size(1), x.size(3), x.size(4)},
                                x.options().dtype(at::kFloat));
  frames.copy_(x.permute({0, 2, 1, 3, 4}));
  return frames;  // [B, F, 3, H, W] float32 in [0, 1]
}

}  // namespace ditgen::ltx2
