// nn::joint_qkv and the two writers it rests on (linear_into, qk_norm_rope_into) off the GPU: the joint
// q, k and v equal the projections concatenated [text | image] bit for bit, for one or two items, with or
// without biases; an output of the wrong shape is refused. (The CUDA kernels' cases: test_fused_cuda.cpp.)
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include "joint_qkv_cases.h"
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
        const RandomJointStreams s(B, L, N, W, H, D, biased, 0.2, at::TensorOptions().dtype(dt));
        const auto [Q, K, V] = nn::joint_qkv(s.text, s.image, H, D, 1e-6);
        const auto [Qcat, Kcat, Vcat] = concatenated_qkv(s.text, s.image, H, D, 1e-6);
        CHECK(at::equal(Q, Qcat));
        CHECK(at::equal(K, Kcat));
        CHECK(at::equal(V, Vcat));
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
