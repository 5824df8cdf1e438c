// nn::joint_qkv and the two writers it rests on (linear_into, qk_norm_rope_into) off the GPU: the joint
// q, k and v equal the projections concatenated [text | image] bit for bit, for one or two items, with or
// without biases; an output of the wrong shape is refused. (The CUDA kernels' cases: test_fused_cuda.cpp.)
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include "lib/nn/joint_qkv.h"
#include "lib/nn/linear.h"
#include "lib/nn/ops.h"

using namespace ditgen;

TEST_CASE("joint_qkv equals the streams' projections concatenated text first, bit for bit", "[ops]") {
  at::manual_seed(11);
  const int64_t W = 24, H = 2, D = 8, L = 3, N = 5;
  for (const at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    for (const int64_t B : {1, 2}) {
      for (const bool biased : {false, true}) {
        INFO("dtype " << c10::toString(dt) << " B " << B << " biases " << biased);
        auto weight = [&] { return nn::Linear(at::randn({H * D, W}).to(dt) * 0.2); };
        auto bias = [&] { return biased ? at::randn({H * D}).to(dt) : at::Tensor(); };
        auto rope = [&](int64_t S) {
          const at::Tensor angle = at::randn({S, D / 2});
          return at::complex(at::cos(angle), at::sin(angle));
        };
        const nn::Linear tq = weight(), tk = weight(), tv = weight(), iq = weight(), ik = weight(), iv = weight();
        const nn::JointStream text{at::randn({B, L, W}).to(dt), &tq, &tk, &tv, bias(), bias(), bias(),
                                   (1 + 0.1 * at::randn({D})).to(dt), (1 + 0.1 * at::randn({D})).to(dt), rope(L)};
        const nn::JointStream image{at::randn({B, N, W}).to(dt), &iq, &ik, &iv, bias(), bias(), bias(),
                                    (1 + 0.1 * at::randn({D})).to(dt), (1 + 0.1 * at::randn({D})).to(dt), rope(N)};
        const auto [Q, K, V] = nn::joint_qkv(text, image, H, D, 1e-6);

        auto project = [&](const nn::JointStream& s, const nn::Linear* l, const at::Tensor& b) {
          return nn::linear(s.x, *l, b).view({B, s.x.size(1), H, D});
        };
        auto normed = [&](const nn::JointStream& s, const nn::Linear* l, const at::Tensor& b, const at::Tensor& w) {
          return nn::qk_norm_rope(project(s, l, b), w, 1e-6, s.rope);
        };
        CHECK(at::equal(Q, at::cat({normed(text, text.q, text.q_bias, text.norm_q),
                                    normed(image, image.q, image.q_bias, image.norm_q)}, 1)));
        CHECK(at::equal(K, at::cat({normed(text, text.k, text.k_bias, text.norm_k),
                                    normed(image, image.k, image.k_bias, image.norm_k)}, 1)));
        CHECK(at::equal(V, at::cat({project(text, text.v, text.v_bias), project(image, image.v, image.v_bias)}, 1)));
      }
    }
  }
}

TEST_CASE("linear_into and qk_norm_rope_into refuse an output of another shape", "[ops]") {
  const nn::Linear l(at::randn({6, 4}));
  const at::Tensor x = at::randn({2, 3, 4});
  CHECK_THROWS_WITH(nn::linear_into(at::empty({2, 3, 5}), x, l), Catch::Contains("linear_into: output [2, 3, 5]"));
  CHECK_THROWS_WITH(nn::linear_into(at::empty({2, 3, 6}, at::kBFloat16), x, l), Catch::Contains("BFloat16"));
  const at::Tensor angle = at::randn({3, 2});
  CHECK_THROWS_WITH(nn::qk_norm_rope_into(at::empty({2, 3, 1, 5}), at::randn({2, 3, 1, 4}), at::ones({4}), 1e-6,
                                          at::complex(at::cos(angle), at::sin(angle))),
                    Catch::Contains("qk_norm_rope_into: output [2, 3, 1, 5]"));
}
