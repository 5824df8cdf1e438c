#include "lib/nn/ops.h"

#include <torch/version.h>

#include <cmath>

#include "lib/runtime/error.h"

namespace ditgen::nn {

at::Tensor layer_norm(const at::Tensor& x, double eps) {
  const int64_t d = x.size(-1);
  if (x.scalar_type() == at::kFloat || x.is_cuda()) return at::layer_norm(x, {d}, {}, {}, eps);
  return at::layer_norm(x.to(at::kFloat), {d}, {}, {}, eps).to(x.scalar_type());
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor r = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true).add_(eps));
  return (xf * r * weight.to(at::kFloat)).to(x.scalar_type());
}

at::Tensor rms_norm_cast_first(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor r = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true).add_(eps));
  return weight * (xf * r).to(x.scalar_type());
}

namespace {

// Repeats key/value heads for grouped-query attention: [B, S, Hk, D] -> [B, S, H, D].
at::Tensor expand_kv(const at::Tensor& t, int64_t heads) {
  const int64_t hk = t.size(2);
  if (hk == heads) return t;
  DITGEN_CHECK(heads % hk == 0, "attention: {} query heads are not a multiple of {} key heads", heads, hk);
  return t.repeat_interleave(heads / hk, 2);
}

// Reference math path: fp32 softmax with max subtraction; rows with no visible key give 0.
AttentionLse math_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& mask) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor qh = q.transpose(1, 2).to(at::kFloat);                          // [B, H, Sq, D]
  at::Tensor kh = expand_kv(k, q.size(2)).transpose(1, 2).to(at::kFloat);    // [B, H, Sk, D]
  at::Tensor vh = expand_kv(v, q.size(2)).transpose(1, 2).to(at::kFloat);
  at::Tensor s = at::matmul(qh, kh.transpose(-1, -2)).mul_(scale);           // [B, H, Sq, Sk]
  if (mask) s.masked_fill_(mask->logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor m = std::get<0>(s.max(-1, /*keepdim=*/true));
  m = at::where(at::isinf(m), at::zeros_like(m), m);
  at::Tensor p = at::exp(s - m);
  at::Tensor denom = p.sum(-1, /*keepdim=*/true);
  at::Tensor out = at::matmul(p, vh) / at::clamp_min(denom, 1e-38);
  out = at::where(denom > 0, out, at::zeros_like(out));
  at::Tensor lse = (m + at::log(denom)).squeeze(-1);                         // [B, H, Sq]
  return {out.transpose(1, 2).to(q.scalar_type()), lse.transpose(1, 2).contiguous()};
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask) {
#if TORCH_VERSION_MAJOR >= 2
  if (q.is_cuda()) {
    // Fused kernels (flash / memory-efficient / cuDNN) in [B, H, S, D].
    at::Tensor kh = expand_kv(k, q.size(2)), vh = expand_kv(v, q.size(2));
    std::optional<at::Tensor> m;
    if (mask) m = *mask;
    at::Tensor o = at::scaled_dot_product_attention(q.transpose(1, 2), kh.transpose(1, 2), vh.transpose(1, 2), m);
    at::Tensor out = o.transpose(1, 2);
    if (mask) {
      // PyTorch >= 2.5 already returns 0 for fully masked rows; make it explicit for older kernels.
      at::Tensor any = mask->any(-1).expand({q.size(0), q.size(2), q.size(1)}).transpose(1, 2).unsqueeze(-1);
      out = at::where(any, out, at::zeros_like(out));
    }
    return out;
  }
#endif
  return math_attention(q, k, v, mask).out;
}

AttentionLse attention_with_lse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  if (q.is_cuda() && q.scalar_type() != at::kFloat && k.size(2) == q.size(2)) {
    auto r = at::_scaled_dot_product_flash_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2));
    // out [B, H, S, D], logsumexp [B, H, S] float32
    return {std::get<0>(r).transpose(1, 2), std::get<1>(r).transpose(1, 2).contiguous()};
  }
#endif
  return math_attention(q, k, v, std::nullopt);
}

at::Tensor rope_interleaved(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  // Pairs (x[2p], x[2p+1]) rotate by angle p: y0 = a c - b s, y1 = b c + a s.
  at::Tensor xf = x.to(at::kFloat);
  auto shape = xf.sizes().vec();
  shape.back() /= 2;
  shape.push_back(2);
  at::Tensor pairs = xf.reshape(shape);
  at::Tensor a = pairs.select(-1, 0), b = pairs.select(-1, 1);
  at::Tensor rotated = at::stack({-b, a}, -1).flatten(-2);       // [-x1, x0, -x3, x2, ...]
  at::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);          // [S, 1, D] broadcast over heads
  return (xf * c + rotated * s).to(x.scalar_type());
}

at::Tensor rope_half(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  at::Tensor c = cos.unsqueeze(2), s = sin.unsqueeze(2);          // [B, S, 1, D]
  return x * c + rotated * s;
}

}  // namespace ditgen::nn
