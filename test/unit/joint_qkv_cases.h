#pragma once
// What the joint_qkv tests share (CPU: test_joint_qkv.cpp, GPU: test_fused_cuda.cpp): two random streams and
// the joint q, k and v as the models built them before nn::joint_qkv (each stream's projections, q and k
// normed and rotated, concatenated text first).
#include <ATen/ATen.h>

#include <array>

#include "lib/nn/joint_qkv.h"
#include "lib/nn/linear.h"
#include "lib/nn/ops.h"

// Text (L rows) and image (N rows) streams of B items, width W, H heads of D; weights scaled by
// `weight_scale`, biases where `biased`; every tensor in `options`. Holds the linears the streams point to
// (neither copied nor moved).
struct RandomJointStreams {
  std::array<ditgen::nn::Linear, 6> linears;
  ditgen::nn::JointStream text, image;

  RandomJointStreams(int64_t B, int64_t L, int64_t N, int64_t W, int64_t H, int64_t D, bool biased,
                     double weight_scale, const at::TensorOptions& options) {
    for (auto& l : linears) l = ditgen::nn::Linear((at::randn({H * D, W}) * weight_scale).to(options));
    auto bias = [&] { return biased ? at::randn({H * D}).to(options) : at::Tensor(); };
    auto norm = [&] { return (1 + 0.1 * at::randn({D})).to(options); };
    auto rope = [&](int64_t S) {
      const at::Tensor angle = at::randn({S, D / 2});
      return at::complex(at::cos(angle), at::sin(angle)).to(options.device());
    };
    text = {at::randn({B, L, W}).to(options), &linears[0], &linears[1], &linears[2], bias(), bias(), bias(), norm(),
            norm(), rope(L)};
    image = {at::randn({B, N, W}).to(options), &linears[3], &linears[4], &linears[5], bias(), bias(), bias(), norm(),
             norm(), rope(N)};
  }
  RandomJointStreams(const RandomJointStreams&) = delete;
  RandomJointStreams& operator=(const RandomJointStreams&) = delete;
};

inline std::array<at::Tensor, 3> concatenated_qkv(const ditgen::nn::JointStream& text,
                                                  const ditgen::nn::JointStream& image, int64_t H, int64_t D,
                                                  double eps) {
  using namespace ditgen;
  auto project = [&](const nn::JointStream& s, const nn::Linear* l, const at::Tensor& b) {
    return nn::linear(s.x, *l, b).view({s.x.size(0), s.x.size(1), H, D});
  };
  auto normed = [&](const nn::JointStream& s, const nn::Linear* l, const at::Tensor& b, const at::Tensor& w) {
    return nn::qk_norm_rope(project(s, l, b), w, eps, s.rope);
  };
  return {at::cat({normed(text, text.q, text.q_bias, text.norm_q), normed(image, image.q, image.q_bias, image.norm_q)}, 1),
          at::cat({normed(text, text.k, text.k_bias, text.norm_k), normed(image, image.k, image.k_bias, image.norm_k)}, 1),
          at::cat({project(text, text.v, text.v_bias), project(image, image.v, image.v_bias)}, 1)};
}
