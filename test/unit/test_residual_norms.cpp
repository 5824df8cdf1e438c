// nn::gated_residual_rms off the GPU (the CUDA kernel's cases: test_fused_cuda.cpp): the gated residual and
// the norms of its result are gated_residual then rms_modulate, bit for bit, for every form of gate,
// modulation and bias; malformed arguments end with an error.
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "lib/nn/ops.h"

using namespace ditgen;

TEST_CASE("gated_residual_rms on the CPU equals gated_residual then rms_modulate bit for bit", "[ops]") {
  at::manual_seed(5);
  using Mods = std::vector<std::pair<at::Tensor, at::Tensor>>;
  const std::pair<at::Tensor, at::Tensor> plain;  // the norm alone
  const int64_t B = 2, S = 5, D = 24;
  for (const at::ScalarType dt : {at::kBFloat16, at::kFloat}) {
    const at::Tensor x = (at::randn({B, S, D}) * 3).to(dt), y = at::randn({B, S, D}).to(dt);
    const at::Tensor bias = at::randn({D}).to(dt);
    const at::Tensor table = at::randn({B, S, 4, D}).to(dt);  // per-token rows, strided as a block's table
    const at::Tensor per_item = at::randn({B, 1, 2, D}).to(dt);
    const std::pair<at::Tensor, at::Tensor> item{1 + per_item.select(2, 0), per_item.select(2, 1)},
        token{1 + table.select(2, 0), table.select(2, 1)};
    for (const Mods& mods : {Mods{plain}, Mods{item}, Mods{token, plain}, Mods{item, token}}) {
      for (const at::Tensor& gate : {per_item.select(2, 1), table.select(2, 3), at::Tensor()}) {
        for (const at::Tensor& b : {bias, at::Tensor()}) {
          for (const bool residual : {true, false}) {
            if (!residual && (gate.defined() || b.defined())) continue;
            const nn::ResidualNorms r =
                nn::gated_residual_rms(x, residual ? y : at::Tensor(), gate, b, 1e-6, mods);
            const at::Tensor xn = residual ? nn::gated_residual(x, y, gate, b) : x;
            CHECK(at::equal(r.x, xn));
            if (!residual) CHECK(r.x.is_same(x));
            REQUIRE(r.norms.size() == mods.size());
            for (size_t j = 0; j < mods.size(); ++j)
              CHECK(at::equal(r.norms[j], nn::rms_modulate(xn, 1e-6, mods[j].first, mods[j].second)));
          }
        }
      }
    }
  }
  // One or two modulations, each (1 + scale, shift) or neither; no gate or bias without y.
  const at::Tensor x = at::randn({1, 2, 8});
  CHECK_THROWS(nn::gated_residual_rms(x, x, {}, {}, 1e-6, Mods{}));
  CHECK_THROWS(nn::gated_residual_rms(x, x, {}, {}, 1e-6, Mods{plain, plain, plain}));
  CHECK_THROWS(nn::gated_residual_rms(x, x, {}, {}, 1e-6, Mods{{x, at::Tensor()}}));
  CHECK_THROWS(nn::gated_residual_rms(x, {}, x, {}, 1e-6, Mods{plain}));
  CHECK_NOTHROW(nn::gated_residual_rms(x, {}, {}, {}, 1e-6, Mods{plain, plain}));
}
