#include "models/qwen_image/work.h"

namespace ditgen::qwen_image {

pipeline::WorkCounter forward_work(const TransformerConfig& c, int64_t image_tokens, int64_t text_tokens, int64_t batch) {
  const int64_t D = c.inner_dim(), F = c.mlp_hidden(), H = c.num_attention_heads, hd = c.attention_head_dim;
  const int64_t N = batch * image_tokens, L = batch * text_tokens, S = image_tokens + text_tokens;
  const double layers = static_cast<double>(c.num_layers);
  pipeline::WorkCounter w;
  // Input projections, the timestep MLP, the output layer.
  w.linear(N, c.in_channels, D);
  w.linear(L, c.joint_attention_dim, D);
  w.linear(batch, 256, D);
  w.linear(batch, D, D);
  w.linear(batch, D, 2 * D);
  w.linear(N, D, c.out_dim());
  // Every block: both streams' modulations, q, k, v, output and GELU MLP on their own tokens, joint
  // attention over [text, image]. The last block skips the text stream's output and MLP (dead compute).
  w.linear(batch, D, 6 * D, 2 * layers);
  w.linear(N, D, D, 4 * layers);
  w.linear(N, D, F, layers);
  w.linear(N, F, D, layers);
  w.linear(L, D, D, 3 * layers);
  const double text_rest = c.num_layers > 0 ? layers - 1 : 0;
  w.linear(L, D, D, text_rest);
  w.linear(L, D, F, text_rest);
  w.linear(L, F, D, text_rest);
  w.attention(batch, H, S, S, hd, layers);
  return w;
}

pipeline::StepWork step_work(const TransformerConfig& c, int64_t image_tokens, const std::vector<int64_t>& text_tokens,
                             int64_t batch) {
  pipeline::WorkCounter w;
  for (const int64_t l : text_tokens) w.add(forward_work(c, image_tokens, l, batch));
  return w.result();
}

}  // namespace ditgen::qwen_image
