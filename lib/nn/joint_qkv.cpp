#include "lib/nn/joint_qkv.h"

#include "lib/nn/ops.h"

namespace ditgen::nn {

std::array<at::Tensor, 3> joint_qkv(const JointStream& text, const JointStream& image, int64_t heads,
                                    int64_t head_dim, double eps) {
  const int64_t B = image.x.size(0), L = text.x.size(1), N = image.x.size(1);
  std::array<at::Tensor, 3> qkv;
  for (at::Tensor& t : qkv) t = at::empty({B, L + N, heads, head_dim}, image.x.options());
  // Each input's projections one after the other: under --fp8 each input is quantised once.
  const ReuseQuantisedInput once;
  for (const auto& [s, first] : {std::pair{&image, L}, std::pair{&text, int64_t{0}}}) {
    const int64_t S = s->x.size(1);
    auto rows = [&](const at::Tensor& t) { return t.narrow(1, first, S); };
    auto heads_of = [&](const at::Tensor& t) { return t.view({B, S, heads, head_dim}); };
    qk_norm_rope_into(rows(qkv[0]), heads_of(linear(s->x, *s->q, s->q_bias)), s->norm_q, eps, s->rope);
    qk_norm_rope_into(rows(qkv[1]), heads_of(linear(s->x, *s->k, s->k_bias)), s->norm_k, eps, s->rope);
    linear_into(rows(qkv[2]).flatten(2), s->x, *s->v, s->v_bias);
  }
  return qkv;
}

}  // namespace ditgen::nn
