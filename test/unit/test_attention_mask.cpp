// Attention over the keys a mask leaves visible (padded text tokens): equal to softmax attention with the
// hidden keys' scores at -inf, an item that sees no key gets 0, and the visible positions are uploaded once
// per distinct mask.
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
