#pragma once
// Joint attention's inputs over [text | image] rows (FLUX.2's double blocks, Qwen-Image's blocks): each
// stream's q and k (RMS-normed per head, then rotated) and v written straight into its rows of the joint
// tensors, with no concatenation pass over them.
#include <ATen/ATen.h>

#include <array>

#include "lib/nn/linear.h"

namespace ditgen::nn {

// One stream: its input rows x [B, S, W], its projections (biases undefined where there are none), its q
// and k RMSNorm weights [head_dim] and its RoPE factors (complex64 [S, head_dim / 2]).
struct JointStream {
  at::Tensor x;
  const Linear* q;
  const Linear* k;
  const Linear* v;
  at::Tensor q_bias, k_bias, v_bias;
  at::Tensor norm_q, norm_k;
  at::Tensor rope;
};

// q, k and v [B, L + N, heads, head_dim]: the text stream's L rows first, then the image stream's N.
std::array<at::Tensor, 3> joint_qkv(const JointStream& text, const JointStream& image, int64_t heads,
                                    int64_t head_dim, double eps);

}  // namespace ditgen::nn
