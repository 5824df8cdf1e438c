#include "models/flux2/work.h"

namespace ditgen::flux2 {

pipeline::StepWork step_work(const TransformerConfig& c, int64_t image_tokens, int64_t text_tokens, int64_t batch) {
  const int64_t D = c.inner_dim(), F = c.mlp_hidden(), H = c.num_attention_heads, hd = c.attention_head_dim;
  const int64_t N = batch * image_tokens, L = batch * text_tokens, S = image_tokens + text_tokens;
  const int64_t in = c.in_channels * c.patch_size * c.patch_size, tc = c.timestep_guidance_channels;
  pipeline::WorkCounter w;
  // Embeddings, the timestep (and guidance) MLPs, the shared modulations, the output layer.
  w.linear(N, in, D);
  w.linear(L, c.joint_attention_dim, D);
  const double embedders = c.guidance_embeds ? 2 : 1;
  w.linear(batch, tc, D, embedders);
  w.linear(batch, D, D, embedders);
  w.linear(batch, D, 6 * D, 2);
  w.linear(batch, D, 3 * D);
  w.linear(batch, D, 2 * D);
  w.linear(N, D, c.out_dim());
  // Double-stream blocks: each stream's q, k, v, out and SwiGLU MLP on its own tokens, joint attention.
  const double nd = static_cast<double>(c.num_layers);
  for (const int64_t m : {N, L}) {
    w.linear(m, D, D, 4 * nd);
    w.linear(m, D, 2 * F, nd);
    w.linear(m, F, D, nd);
  }
  w.attention(batch, H, S, S, hd, nd);
  // Single-stream blocks: the fused qkv + MLP-in projection and the fused output on the joint sequence.
  const double ns = static_cast<double>(c.num_single_layers);
  w.linear(batch * S, D, 3 * D + 2 * F, ns);
  w.linear(batch * S, D + F, D, ns);
  w.attention(batch, H, S, S, hd, ns);
  return w.result();
}

}  // namespace ditgen::flux2
