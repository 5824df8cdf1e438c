// Attention over the keys a mask leaves visible (padded text tokens): equal to softmax attention with the
// hidden keys' scores at -inf, an item that sees no key gets 0, and the visible positions are uploaded once
// per distinct mask. Also the CPU path of the fused gated residual + RMS norms (lib/nn/ops.h).
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "lib/nn/ops.h"

using namespace ditgen;

namespace {

// softmax(q k^T / sqrt(D) with hidden keys at -inf) v, in double; [B, Sq, H, D] layout as nn::attention.
at::Tensor masked_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  const at::Tensor qd = q.to(at::kDouble).transpose(1, 2), kd = k.to(at::kDouble).transpose(1, 2);
  const at::Tensor vd = v.to(at::kDouble).transpose(1, 2);
  at::Tensor s = at::matmul(qd, kd.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(3)));
  s = s.masked_fill(mask.logical_not().view({mask.size(0), 1, 1, mask.size(1)}),
                    -std::numeric_limits<double>::infinity());
  at::Tensor p = at::nan_to_num(at::softmax(s, -1), 0.0);  // a row with no visible key: 0
  return at::matmul(p, vd).transpose(1, 2);
}

}  // namespace

TEST_CASE("attention over visible keys equals masked softmax attention; no visible key gives 0", "[attention]") {
  at::manual_seed(3);
  const int64_t B = 3, Sq = 5, Sk = 7, H = 2, D = 8;
  const at::Tensor q = at::randn({B, Sq, H, D}), k = at::randn({B, Sk, H, D}), v = at::randn({B, Sk, H, D});
  at::Tensor mask = at::ones({B, Sk}, at::kBool);
  mask[0].narrow(0, 4, 3).fill_(false);  // item 0: the last three keys padded
  mask[1].fill_(false);                  // item 1: nothing visible
  mask[2][1] = false;                    // item 2: a hole
  const nn::AttentionLse r = nn::attention_visible_keys(q, k, v, mask, /*want_lse=*/true);
  CHECK(at::allclose(r.out.to(at::kDouble), masked_reference(q, k, v, mask), 1e-5, 1e-5));
  CHECK(at::all(r.out[1] == 0).item<bool>());
  CHECK(std::isinf(r.lse[1][0][0].item<float>()));
  CHECK(r.lse[1][0][0].item<float>() < 0);
  // An all-visible mask is plain attention.
  const at::Tensor all = at::ones({B, Sk}, at::kBool);
  CHECK(at::allclose(nn::attention_visible_keys(q, k, v, all, false).out, nn::attention(q, k, v), 1e-6, 1e-6));
}

TEST_CASE("visible key positions: uploaded once per distinct mask, whatever tensor holds it", "[attention]") {
  at::Tensor a = at::ones({2, 6}, at::kBool);
  a[0][5] = false;
  a[1].narrow(0, 0, 2).fill_(false);
  const at::Tensor same = a.clone();  // another tensor, the same contents
  const auto& pa = nn::visible_key_positions(a, at::kCPU);
  REQUIRE(pa.size() == 2);
  CHECK(at::equal(pa[0], at::arange(5, at::kLong)));
  CHECK(at::equal(pa[1], at::arange(2, 6, at::kLong)));
  const void* first = pa[0].data_ptr();
  CHECK(nn::visible_key_positions(same, at::kCPU)[0].data_ptr() == first);  // from the cache
  at::Tensor other = a.clone();
  other[0][5] = true;
  const auto& po = nn::visible_key_positions(other, at::kCPU);
  CHECK(po[0].numel() == 6);
  CHECK(nn::visible_key_positions(a, at::kCPU)[0].data_ptr() == first);  // still cached
}

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
