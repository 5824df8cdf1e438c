#include "models/ltx2/vocoder.h"

#include <fmt/ranges.h>

#include <cmath>

#include "lib/io/json_fields.h"
#include "lib/io/safetensors.h"
#include "lib/nn/vae_blocks.h"
#include "lib/runtime/error.h"

namespace ditgen::ltx2 {

// ---------------------------------------------------------------------------------------------
// Config

VocoderConfig VocoderConfig::from_json(const nlohmann::json& j, const std::string& where) {
  DITGEN_CHECK(j.is_object(), "{}: the vocoder config is not a JSON object", where);
  VocoderConfig c;
  const io::JsonFields read(j, where);
  read("in_channels", c.in_channels);
  read("hidden_channels", c.hidden_channels);
  read("out_channels", c.out_channels);
  read("upsample_kernel_sizes", c.upsample_kernel_sizes);
  read("upsample_factors", c.upsample_factors);
  read("resnet_kernel_sizes", c.resnet_kernel_sizes);
  read("resnet_dilations", c.resnet_dilations);
  read("leaky_relu_negative_slope", c.leaky_relu_negative_slope);
  // A null final_act_fn means "no final activation" upstream, not the default.
  auto fa = j.find("final_act_fn");
  c.final_act_fn = fa != j.end() && fa->is_null() ? "none" : io::json_get<std::string>(j, "final_act_fn", c.final_act_fn, where);
  read("final_bias", c.final_bias);
  read("output_sampling_rate", c.output_sampling_rate);
  const auto act_fn = io::json_get<std::string>(j, "act_fn", "leaky_relu", where);
  const bool antialias = io::json_get<bool>(j, "antialias", false, where);

  DITGEN_CHECK(c.in_channels > 0, "{}: key 'in_channels' must be positive, got {}", where, c.in_channels);
  DITGEN_CHECK(c.out_channels > 0, "{}: key 'out_channels' must be positive, got {}", where, c.out_channels);
  DITGEN_CHECK(c.output_sampling_rate > 0, "{}: key 'output_sampling_rate' must be positive, got {}", where,
               c.output_sampling_rate);
  // The snake / anti-aliased variants belong to LTX-2.3's BWE vocoder.
  DITGEN_CHECK(act_fn == "leaky_relu", "{}: key 'act_fn' must be \"leaky_relu\", got \"{}\" (snake "
               "activations are not implemented)", where, act_fn);
  DITGEN_CHECK(!antialias, "{}: key 'antialias' must be false; anti-aliased activations are not implemented",
               where);
  DITGEN_CHECK(c.final_act_fn == "tanh" || c.final_act_fn == "clamp" || c.final_act_fn == "none",
               "{}: key 'final_act_fn' must be \"tanh\", \"clamp\" or null, got \"{}\"", where, c.final_act_fn);
  DITGEN_CHECK(std::isfinite(c.leaky_relu_negative_slope),
               "{}: key 'leaky_relu_negative_slope' must be finite, got {}", where, c.leaky_relu_negative_slope);

  const size_t stages = c.upsample_factors.size();
  DITGEN_CHECK(stages > 0 && stages < 16, "{}: key 'upsample_factors' must have 1 to 15 entries, got {}",
               where, stages);
  DITGEN_CHECK(c.upsample_kernel_sizes.size() == stages,
               "{}: key 'upsample_kernel_sizes' has {} entries but upsample_factors has {}", where,
               c.upsample_kernel_sizes.size(), stages);
  for (size_t i = 0; i < stages; ++i) {
    const int64_t s = c.upsample_factors[i], k = c.upsample_kernel_sizes[i];
    DITGEN_CHECK(s > 0, "{}: key 'upsample_factors' entry {} must be positive, got {}", where, i, s);
    // ConvTranspose1d(stride s, padding (k-s)/2) makes exactly T*s samples only when k - s is even
    // and not negative.
    DITGEN_CHECK(k >= s && (k - s) % 2 == 0,
                 "{}: key 'upsample_kernel_sizes' entry {} is {} but must be >= the factor {} with an even "
                 "difference (the length must grow exactly x{})",
                 where, i, k, s, s);
  }
  // Every upsampler halves the channels.
  DITGEN_CHECK(c.hidden_channels > 0 && c.hidden_channels % (int64_t{1} << stages) == 0,
               "{}: key 'hidden_channels' must be a positive multiple of 2^{} (one halving per upsampler), "
               "got {}",
               where, stages, c.hidden_channels);
  DITGEN_CHECK(!c.resnet_kernel_sizes.empty(), "{}: key 'resnet_kernel_sizes' is empty", where);
  DITGEN_CHECK(c.resnet_dilations.size() == c.resnet_kernel_sizes.size(),
               "{}: key 'resnet_dilations' has {} entries but resnet_kernel_sizes has {}", where,
               c.resnet_dilations.size(), c.resnet_kernel_sizes.size());
  for (size_t i = 0; i < c.resnet_kernel_sizes.size(); ++i) {
    DITGEN_CHECK(c.resnet_kernel_sizes[i] > 0, "{}: key 'resnet_kernel_sizes' entry {} must be positive, got {}",
                 where, i, c.resnet_kernel_sizes[i]);
    DITGEN_CHECK(!c.resnet_dilations[i].empty(), "{}: key 'resnet_dilations' entry {} is empty", where, i);
    for (int64_t d : c.resnet_dilations[i])
      DITGEN_CHECK(d > 0, "{}: key 'resnet_dilations' entry {} has a non-positive dilation {}", where, i, d);
  }
  return c;
}

int64_t VocoderConfig::upsample_factor() const {
  int64_t f = 1;
  for (int64_t s : upsample_factors) f *= s;
  return f;
}

// ---------------------------------------------------------------------------------------------
// Building blocks (ltx2.md 5.2), all on [B, C, T]

namespace {

constexpr double kFinalSlope = 0.01;  // torch's LeakyReLU default after the last stage (5.2), not the config's

using nn::Init;
using nn::Shard;

using nn::cpu_reduced;  // reduced dtypes compute in fp32 on the CPU (lib/nn/vae_blocks.h)

at::Tensor to_float(const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; }

// Conv1d with stride 1 and "same" zero padding: d(k-1) in all, half on the left (rounded down).
struct Conv1d {
  at::Tensor weight, bias;  // [cout, cin, k], [cout] (undefined without bias)
  int64_t dilation = 1;

  static Conv1d load(const nn::Weights& wb, int64_t cin, int64_t cout, int64_t k, int64_t dilation = 1,
                     bool with_bias = true) {
    return {wb.get("weight", {cout, cin, k}, Shard::replicated(), Init::Linear),
            with_bias ? wb.get("bias", {cout}, Shard::replicated(), Init::Bias) : at::Tensor(), dilation};
  }
  // [B, cin, T] -> [B, cout, T]
  at::Tensor operator()(const at::Tensor& x) const {
    const int64_t total = dilation * (weight.size(2) - 1), left = total / 2;
    const bool reduced = cpu_reduced(x);
    at::Tensor in = reduced ? x.to(at::kFloat) : x;
    int64_t pad = left;
    if (total - left != left) {  // an even kernel: torch's "same" puts the extra zero on the right
      in = at::constant_pad_nd(in, {left, total - left});
      pad = 0;
    }
    if (!reduced) return at::conv1d(in, weight, bias, {1}, {pad}, {dilation});
    return at::conv1d(in, weight.to(at::kFloat), to_float(bias), {1}, {pad}, {dilation}).to(x.scalar_type());
  }
};

// ConvTranspose1d(cin -> cin/2, kernel k, stride s, padding (k-s)/2): length T -> T*s exactly (named apart
// from vae.cpp's Upsampler: one unity batch may hold both files).
struct VocoderUpsampler {
  at::Tensor weight, bias;  // [cin, cout, k], [cout]
  int64_t stride = 1;

  static VocoderUpsampler load(const nn::Weights& wb, int64_t cin, int64_t cout, int64_t k, int64_t s) {
    return {wb.get("weight", {cin, cout, k}, Shard::replicated(), Init::Linear),
            wb.get("bias", {cout}, Shard::replicated(), Init::Bias), s};
  }
  // [B, cin, T] -> [B, cout, T*s]
  at::Tensor operator()(const at::Tensor& x) const {
    const int64_t padding = (weight.size(2) - stride) / 2;
    if (!cpu_reduced(x)) return at::conv_transpose1d(x, weight, bias, {stride}, {padding});
    return at::conv_transpose1d(x.to(at::kFloat), weight.to(at::kFloat), bias.to(at::kFloat), {stride},
                                {padding})
        .to(x.scalar_type());
  }
};

// HiFi-GAN ResBlock: for each dilation d, x += conv2(lrelu(conv1_d(lrelu(x)))); convs2 undilated.
struct ResBlock {
  std::vector<Conv1d> convs1, convs2;

  static ResBlock load(const nn::Weights& wb, int64_t c, int64_t k, const std::vector<int64_t>& dilations) {
    ResBlock r;
    for (size_t i = 0; i < dilations.size(); ++i) {
      r.convs1.push_back(Conv1d::load(wb.pp("convs1").pp(static_cast<int64_t>(i)), c, c, k, dilations[i]));
      r.convs2.push_back(Conv1d::load(wb.pp("convs2").pp(static_cast<int64_t>(i)), c, c, k, 1));
    }
    return r;
  }
  // [B, C, T] -> [B, C, T], a new tensor (x is left as it is: the stage's blocks share it)
  at::Tensor operator()(const at::Tensor& x, double slope) const {
    at::Tensor out;
    for (size_t i = 0; i < convs1.size(); ++i) {
      const at::Tensor& in = out.defined() ? out : x;
      at::Tensor t = convs1[i](at::leaky_relu(in, slope));
      at::leaky_relu_(t, slope);
      t = convs2[i](t);
      out = out.defined() ? out.add_(t) : t.add_(x);
    }
    return out;
  }
};

}  // namespace

struct Vocoder::Net {
  Conv1d conv_in;
  std::vector<VocoderUpsampler> upsamplers;
  std::vector<ResBlock> resnets;  // stage i uses resnets[i * per_stage + j]
  Conv1d conv_out;

  // Channels for any config: conv_in makes hidden; stage i halves hidden/2^i -> hidden/2^(i+1).
  static Net load(const nn::Weights& wb, const VocoderConfig& config) {
    const int64_t stages = static_cast<int64_t>(config.upsample_factors.size());
    const int64_t last = config.hidden_channels >> stages;
    Net net{Conv1d::load(wb.pp("conv_in"), config.in_channels, config.hidden_channels, 7),
            {},
            {},
            Conv1d::load(wb.pp("conv_out"), last, config.out_channels, 7, 1, config.final_bias)};
    int64_t c = config.hidden_channels;
    for (int64_t i = 0; i < stages; ++i) {
      net.upsamplers.push_back(VocoderUpsampler::load(wb.pp("upsamplers").pp(i), c, c / 2,
                                                      config.upsample_kernel_sizes[i],
                                                      config.upsample_factors[i]));
      c /= 2;
      for (size_t j = 0; j < config.resnet_kernel_sizes.size(); ++j) {
        const int64_t k = static_cast<int64_t>(net.resnets.size());
        net.resnets.push_back(
            ResBlock::load(wb.pp("resnets").pp(k), c, config.resnet_kernel_sizes[j], config.resnet_dilations[j]));
      }
    }
    return net;
  }

  // [B, in_channels, T] -> [B, out_channels, T * prod(factors)]
  at::Tensor operator()(const at::Tensor& mel, const VocoderConfig& config) const {
    const double slope = config.leaky_relu_negative_slope;
    const size_t per_stage = config.resnet_kernel_sizes.size();
    at::Tensor x = conv_in(mel);  // [B, hidden, T]
    for (size_t i = 0; i < upsamplers.size(); ++i) {
      at::leaky_relu_(x, slope);  // x is this function's own tensor from here on
      x = upsamplers[i](x);       // [B, C_i / 2, T * s_0 * ... * s_i]
      // Mean over the stage's blocks, accumulated in fp32 and rounded once for reduced dtypes
      // (torch.mean of the stacked outputs), without stacking them.
      at::Tensor acc;
      for (size_t j = 0; j < per_stage; ++j) {
        at::Tensor r = resnets[i * per_stage + j](x, slope);
        if (!acc.defined())
          acc = r.scalar_type() == at::kFloat ? r : r.to(at::kFloat);
        else
          acc.add_(r);
      }
      x = acc.div_(static_cast<double>(per_stage)).to(x.scalar_type());
    }
    at::leaky_relu_(x, kFinalSlope);
    x = conv_out(x);  // [B, out_channels, T * prod(factors)]
    if (config.final_act_fn == "tanh") return x.tanh_();
    if (config.final_act_fn == "clamp") return x.clamp_(-1, 1);
    return x;
  }
};

// ---------------------------------------------------------------------------------------------
// Vocoder

Vocoder::Vocoder(const VocoderConfig& config, const nn::Weights& wb)
    : config_(config),
      dtype_(wb.dtype()),
      device_(wb.device()),
      net_(std::make_shared<Net>(Net::load(wb, config_))) {}

at::Tensor Vocoder::forward(const at::Tensor& mel) const {
  DITGEN_CHECK(mel.dim() == 4 && mel.size(1) * mel.size(3) == config_.in_channels && mel.size(2) > 0,
               "LTX-2 vocoder: expected mel [B, S, T, M] with S * M = in_channels = {}, got {}",
               config_.in_channels, io::shape_str(mel.sizes()));
  // [B, S, T, M] -> [B, S, M, T] -> [B, S*M, T]: channel s * M + m, time last.
  const at::Tensor x = mel.to(device_, dtype_).transpose(2, 3).reshape({mel.size(0), config_.in_channels, mel.size(2)});
  return (*net_)(x, config_);  // [B, out_channels, T * prod(factors)]
}

}  // namespace ditgen::ltx2
