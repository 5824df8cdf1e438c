#include "lib/nn/vae_blocks.h"

#include <vector>

#include "lib/nn/ops.h"
#include "lib/runtime/error.h"

namespace ditgen::nn {

namespace vae {

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (!cpu_reduced(x)) return at::linear(x, w, b);
  return at::linear(x.to(at::kFloat), w.to(at::kFloat), b.to(at::kFloat)).to(x.scalar_type());
}

Conv2d Conv2d::load(const Weights& wb, int64_t cin, int64_t cout, int64_t kernel, int64_t stride,
                    int64_t padding) {
  return {wb.get("weight", {cout, cin, kernel, kernel}, Shard::replicated(), Init::Linear),
          wb.get("bias", {cout}, Shard::replicated(), Init::Bias), stride, padding};
}

at::Tensor Conv2d::operator()(at::Tensor x, const parallel::RowSplit& rows) const {
  DITGEN_CHECK(stride == 1 || !rows.split(), "internal: VAE-P splits only stride-1 convolutions");
  const at::Tensor in = rows.with_halo(x, /*dim=*/2, padding, parallel::RowPad::Zeros);
  const auto dtype = x.scalar_type();
  x.reset();  // a temporary argument is freed here
  const std::vector<int64_t> pad = {rows.conv_padding(padding), padding};
  if (!cpu_reduced(in)) return at::conv2d(in, weight, bias, {stride, stride}, pad);
  return at::conv2d(in.to(at::kFloat), weight.to(at::kFloat), bias.to(at::kFloat), {stride, stride}, pad)
      .to(dtype);
}

at::Tensor downsample_2x(const Conv2d& conv, at::Tensor x, parallel::RowSplit& rows) {
  at::Tensor in = at::constant_pad_nd(rows.with_rows_below(x, /*dim=*/2, 1), {0, 1, 0, 0}, 0);
  x.reset();
  rows = rows.downscaled(2);
  return conv(std::move(in));  // the padded band is whole on this rank: no halo
}

at::Tensor upsample_2x(const Conv2d& conv, const at::Tensor& x, parallel::RowSplit& rows) {
  const std::vector<int64_t> size = {x.size(2) * 2, x.size(3) * 2};
  rows = rows.scaled(2);
  return conv(at::upsample_nearest2d(x, size), rows);
}

at::Tensor pixel_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& o_w, const at::Tensor& o_b, const at::Tensor& x) {
  at::Tensor o = linear(nn::attention(q, k, v).squeeze(2), o_w, o_b);  // [B, h*W, C]
  return o.transpose(1, 2).reshape(x.sizes()).add_(x);
}

}  // namespace vae
}  // namespace ditgen::nn
