#pragma once
// Building blocks the image VAEs share (FLUX.2's AutoencoderKLFlux2 and Qwen-Image's Wan VAE on one
// frame; LTX-2's video VAE and audio modules use the CPU precision rule): the CPU fp32 compute for
// reduced dtypes, a 2D convolution that runs on a band of rows under VAE-P (lib/parallel/rows.h), the x2
// resamplers around it, a ResNet block over the model's own norm, and the core of a one-head attention
// over pixels. What is a model's own (its norms, its attention's weight layout, its key names, 3D padding)
// stays in its folder.
#include <ATen/ATen.h>

#include <optional>

#include "lib/nn/weights.h"
#include "lib/parallel/rows.h"

namespace ditgen::nn {

// LibTorch 1.13's CPU kernels accumulate bf16/fp16 convolutions and matmuls in that precision (a
// 3x3x32 conv loses ~2%, 8x the rounding of its output); on the CPU such layers compute in fp32 and
// round once. GPU kernels accumulate in fp32 themselves, so GPU activations are never upcast.
inline bool cpu_reduced(const at::Tensor& x) { return !x.is_cuda() && x.scalar_type() != at::kFloat; }

namespace vae {

// [B, S, in] -> [B, S, out], in fp32 on the CPU for reduced dtypes (cpu_reduced).
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

// A 2D convolution (`weight` [cout, cin, k, k], `bias` [cout]) with zero padding.
struct Conv2d {
  at::Tensor weight, bias;
  int64_t stride = 1, padding = 0;

  // `<wb>.weight` [cout, cin, k, k] and `<wb>.bias` [cout].
  static Conv2d load(const Weights& wb, int64_t cin, int64_t cout, int64_t kernel, int64_t stride,
                     int64_t padding);
  // [B, cin, H, W] -> [B, cout, H', W']. Under VAE-P (`rows` split, stride 1) x is this rank's band and
  // the rows' padding comes from the neighbours (zeros only at the image's top and bottom).
  at::Tensor operator()(at::Tensor x, const parallel::RowSplit& rows = {}) const;
};

// Downsample2D with padding 0 (FLUX.2's and Qwen-Image's): zero-pad right and bottom by one, then `conv`
// (3x3, stride 2, no padding). Under VAE-P the row below a band is the next band's first; bands start on
// even rows, so output row i reads input rows 2i..2i+2 and stays on its rank. [B, C, H, W] ->
// [B, C', H/2, W/2] (floor); `rows` becomes the output's split, x is released once padded.
at::Tensor downsample_2x(const Conv2d& conv, at::Tensor x, parallel::RowSplit& rows);
// Upsample2D: nearest x2 (exact in any dtype; each row becomes two on its rank), then `conv` (3x3, pad 1).
// [B, C, H, W] -> [B, C', 2H, 2W]; `rows` becomes the output's split.
at::Tensor upsample_2x(const Conv2d& conv, const at::Tensor& x, parallel::RowSplit& rows);

// A ResNet block without time embedding: shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))), k3 convs
// and a 1x1 shortcut iff cin != cout. `Norm::silu(x, rows)` is the model's norm followed by SiLU (a norm
// over groups reduces over every rank's band under VAE-P; a per-pixel norm ignores `rows`).
template <class Norm>
struct ResnetBlock {
  Norm norm1, norm2;
  Conv2d conv1, conv2;
  std::optional<Conv2d> conv_shortcut;

  // [B, cin, H, W] -> [B, cout, H, W] (VAE-P: this rank's band of rows)
  at::Tensor operator()(const at::Tensor& x, const parallel::RowSplit& rows = {}) const {
    at::Tensor h = conv1(norm1.silu(x, rows), rows);
    h = conv2(norm2.silu(h, rows), rows);
    return conv_shortcut ? h.add_((*conv_shortcut)(x)) : h.add_(x);
  }
};

// The core of a VAE mid block's one-head attention of width C over the pixels: q [B, h*W, 1, C] (this
// band's pixels), k, v [B, H*W, 1, C] (every pixel of the image, gathered under VAE-P), then the output
// projection `o_w` [C, C], `o_b` [C] and the residual x [B, C, h, W]. Returns [B, C, h, W].
at::Tensor pixel_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& o_w, const at::Tensor& o_b, const at::Tensor& x);

}  // namespace vae
}  // namespace ditgen::nn
