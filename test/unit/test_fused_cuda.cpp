// The fused CUDA kernels against the ATen compositions they replace (CUDA builds; run on a GPU with
// `ditgen_tests "[cuda]"`). The composition is what every CPU run and fp32 GPU run executes, so each
// kernel is checked against it on the same bf16 inputs (computed on the CPU), and both against an fp32
// reference of the same maths: the fused result may differ from the composition only by bf16 rounding.
#ifdef DITGEN_CUDA
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include "joint_qkv_cases.h"
#include "lib/nn/joint_qkv.h"
#include "lib/nn/linear.h"
#include "lib/nn/ops.h"

using namespace ditgen;

namespace {

at::Tensor cuda_bf16(const at::Tensor& t) { return t.to(at::kCUDA, at::kBFloat16); }

// Largest difference in units of the reference's magnitude (bf16 keeps 8 bits: ~4e-3 a rounding).
double rel_max(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor x = a.to(at::kCPU, at::kFloat), y = b.to(at::kCPU, at::kFloat);
  return (x - y).abs().max().item<double>() / std::max(y.abs().max().item<double>(), 1e-12);
}

void require_gpu() {
  if (!at::hasCUDA()) FAIL("this CUDA build's fused-kernel tests need a GPU");
}

// A contiguous bf16 CUDA copy whose data starts 4 bytes past a 16-byte boundary: the fused ops still take
// it (4-byte aligned), but the kernels' 16-byte vector paths must hand it to their general kernels.
at::Tensor cuda_bf16_misaligned(const at::Tensor& t) {
  at::Tensor flat = at::empty({t.numel() + 8}, at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16));
  at::Tensor v = flat.narrow(0, 2, t.numel()).view(t.sizes());
  v.copy_(t);
  REQUIRE(reinterpret_cast<uintptr_t>(v.data_ptr()) % 16 == 4);
  return v;
}

}  // namespace

TEST_CASE("fused rms_modulate equals the composition (bf16) and the fp32 maths", "[cuda]") {
  require_gpu();
  at::manual_seed(1);
  for (int64_t T : {1, 37}) {  // one modulation per item, or per token (image-to-video)
    at::Tensor x = at::randn({2, 37, 512}) * 3, scale = at::randn({2, T, 512}) * 0.5, shift = at::randn({2, T, 512});
    at::Tensor xb = x.to(at::kBFloat16), s1 = (1 + scale.to(at::kBFloat16)), sh = shift.to(at::kBFloat16);
    at::Tensor fused = nn::rms_modulate(cuda_bf16(xb), 1e-6, cuda_bf16(s1), cuda_bf16(sh));
    at::Tensor composed = nn::rms_modulate(xb, 1e-6, s1, sh);  // the CPU composition
    at::Tensor fp32 = nn::rms_modulate(xb.to(at::kFloat).cuda(), 1e-6, s1.to(at::kFloat).cuda(), sh.to(at::kFloat).cuda());
    CHECK(fused.scalar_type() == at::kBFloat16);
    CHECK(rel_max(fused, composed) < 8e-3);
    CHECK(rel_max(fused, fp32) < 1.6e-2);
    CHECK(rel_max(composed, fp32) < 1.6e-2);
  }
  at::Tensor x = at::randn({3, 5, 256}).to(at::kBFloat16);
  CHECK(rel_max(nn::rms_modulate(cuda_bf16(x), 1e-6), nn::rms_modulate(x, 1e-6)) < 8e-3);
}

TEST_CASE("fused rms_modulate: vector widths, partial warps and the general kernel", "[cuda]") {
  require_gpu();
  at::manual_seed(7);
  // D 4096: LTX-2's width, two vectors a thread; 2056: 257 vectors, a partial last warp; 100 (not a
  // multiple of 8): the general kernel. Odd token counts put items' rows in one block of the vector kernel.
  for (int64_t D : {4096, 2056, 100}) {
    for (int64_t B : {1, 2}) {
      const int64_t S = 7;
      at::Tensor x = (at::randn({B, S, D}) * 3).to(at::kBFloat16);
      CHECK(rel_max(nn::rms_modulate(cuda_bf16(x), 1e-6), nn::rms_modulate(x, 1e-6)) < 8e-3);
      for (int64_t T : {int64_t{1}, S}) {
        at::Tensor s1 = (1 + 0.5 * at::randn({B, T, D})).to(at::kBFloat16), sh = at::randn({B, T, D}).to(at::kBFloat16);
        const at::Tensor composed = nn::rms_modulate(x, 1e-6, s1, sh);
        CHECK(rel_max(nn::rms_modulate(cuda_bf16(x), 1e-6, cuda_bf16(s1), cuda_bf16(sh)), composed) < 8e-3);
        // A row that is not 16-byte aligned: the general kernel.
        CHECK(rel_max(nn::rms_modulate(cuda_bf16_misaligned(x), 1e-6, cuda_bf16(s1), cuda_bf16(sh)), composed) < 8e-3);
      }
    }
  }
}

namespace {

// rms_norm_rotary fused (bf16 on the GPU) against the CPU composition and the fp32 maths, for no, split
// and interleaved rotation, with the row's own mean square and with one spanning a wider row (the TP
// path: the sum-of-squares kernel, a reduce, then the norm).
void check_rms_norm_rotary(int64_t B, int64_t S, int64_t H, int64_t hd, bool misaligned) {
  INFO("B " << B << " S " << S << " heads " << H << " x " << hd << (misaligned ? " misaligned" : ""));
  const int64_t D = H * hd;
  at::Tensor x = (at::randn({B, S, D}) * 2).to(at::kBFloat16), w = (1 + 0.2 * at::randn({D})).to(at::kBFloat16);
  at::Tensor ang = at::randn({S, D / 2});
  struct Case {
    nn::Rotary kind;
    at::Tensor cos, sin;
  };
  const std::vector<Case> cases = {
      {nn::Rotary::None, at::Tensor(), at::Tensor()},
      {nn::Rotary::SplitHalf, at::cos(ang).view({S, H, hd / 2}), at::sin(ang).view({S, H, hd / 2})},
      {nn::Rotary::Interleaved, at::cos(ang).repeat_interleave(2, 1), at::sin(ang).repeat_interleave(2, 1)}};
  for (const Case& c : cases) {
    INFO("rotary " << static_cast<int>(c.kind));
    auto on = [&](const at::Device& d, at::ScalarType dt, const std::function<void(at::Tensor&)>& reduce, int64_t width) {
      const at::Tensor cs = c.cos.defined() ? c.cos.to(d) : at::Tensor(), sn = c.sin.defined() ? c.sin.to(d) : at::Tensor();
      const at::Tensor xd = d.is_cuda() && dt == at::kBFloat16 && misaligned ? cuda_bf16_misaligned(x) : x.to(d, dt);
      return nn::rms_norm_rotary(xd, w.to(d, dt), 1e-6, width, reduce, c.kind, cs, sn, hd);
    };
    const at::Tensor fused = on(at::kCUDA, at::kBFloat16, nullptr, D);
    const at::Tensor composed = on(at::kCPU, at::kBFloat16, nullptr, D);
    const at::Tensor fp32 = on(at::kCUDA, at::kFloat, nullptr, D);
    CHECK(rel_max(fused, composed) < 8e-3);
    CHECK(rel_max(fused, fp32) < 1.6e-2);
    // A mean square spanning a wider row (TP): the reduce doubles the sums as a second equal rank would.
    auto twice = [](at::Tensor& sums) { sums.mul_(2); };
    CHECK(rel_max(on(at::kCUDA, at::kBFloat16, twice, 2 * D), on(at::kCPU, at::kBFloat16, twice, 2 * D)) < 8e-3);
    // A self-attention's q and k in one pass over the shared tables: each the same bits as its own call.
    const at::Tensor k = (at::randn({B, S, D}) * 3).to(at::kBFloat16), wk = (1 + 0.2 * at::randn({D})).to(at::kBFloat16);
    for (const auto& reduce : {std::function<void(at::Tensor&)>(), std::function<void(at::Tensor&)>(twice)}) {
      const int64_t width = reduce ? 2 * D : D;
      const at::Tensor cs = c.cos.defined() ? c.cos.cuda() : at::Tensor(), sn = c.sin.defined() ? c.sin.cuda() : at::Tensor();
      const at::Tensor xq = misaligned ? cuda_bf16_misaligned(x) : x.cuda(), xk = k.cuda();
      const auto [q2, k2] =
          nn::rms_norm_rotary_pair(xq, xk, w.cuda(), wk.cuda(), 1e-6, width, reduce, c.kind, cs, sn, hd);
      CHECK(at::equal(q2, nn::rms_norm_rotary(xq, w.cuda(), 1e-6, width, reduce, c.kind, cs, sn, hd)));
      CHECK(at::equal(k2, nn::rms_norm_rotary(xk, wk.cuda(), 1e-6, width, reduce, c.kind, cs, sn, hd)));
    }
  }
}

}  // namespace

TEST_CASE("fused rms_norm_rotary equals the composition for split, interleaved and no rotation", "[cuda]") {
  require_gpu();
  at::manual_seed(2);
  check_rms_norm_rotary(2, 19, 4, 64, false);  // D 256: 16 units, half a warp idle
  // LTX-2's audio (32 x 64) and video (32 x 128) rows, batch 1 and 2 (the rows of a token share a block).
  check_rms_norm_rotary(1, 7, 32, 64, false);
  check_rms_norm_rotary(2, 7, 32, 64, false);
  check_rms_norm_rotary(2, 5, 32, 128, false);
  check_rms_norm_rotary(3, 3, 64, 128, false);  // D 8192: two units a thread
}

TEST_CASE("fused rms_norm_rotary: shapes and alignments the vector kernel leaves to the general one", "[cuda]") {
  require_gpu();
  at::manual_seed(8);
  check_rms_norm_rotary(2, 5, 4, 36, false);  // half head 18: split rotary general, the others vector (D 144)
  check_rms_norm_rotary(2, 5, 4, 34, false);  // D 136, not a multiple of 16: all general
  check_rms_norm_rotary(2, 5, 32, 128, true);  // a row 4 bytes past a 16-byte boundary
  check_rms_norm_rotary(1, 3, 66, 128, false);  // D 8448: longer than the vector kernel's rows
}

TEST_CASE("fused gated_residual equals the composition for per-item and per-token gates, with and without bias",
          "[cuda]") {
  require_gpu();
  at::manual_seed(4);
  const int64_t B = 2, S = 33, D = 256;
  at::Tensor x = (at::randn({B, S, D}) * 4).to(at::kBFloat16), y = at::randn({B, S, D}).to(at::kBFloat16);
  at::Tensor bias = at::randn({D}).to(at::kBFloat16);
  for (int64_t T : {int64_t{1}, S}) {
    // Gates as the blocks take them: one row of a [B, T, 6, D] modulation (strided), and contiguous.
    at::Tensor table = at::randn({B, T, 6, D}).to(at::kBFloat16);
    for (const at::Tensor& gate : {table.select(2, 2), table.select(2, 5).contiguous(), at::Tensor()}) {
      for (const at::Tensor& b : {bias, at::Tensor()}) {
        at::Tensor fused = nn::gated_residual(cuda_bf16(x), cuda_bf16(y), gate.defined() ? cuda_bf16(gate) : gate,
                                              b.defined() ? cuda_bf16(b) : b);
        at::Tensor composed = nn::gated_residual(x, y, gate, b);  // the CPU composition
        at::Tensor fp32 = nn::gated_residual(x.to(at::kFloat), y.to(at::kFloat),
                                             gate.defined() ? gate.to(at::kFloat) : gate, b.defined() ? b.to(at::kFloat) : b);
        CHECK(fused.scalar_type() == at::kBFloat16);
        CHECK(fused.sizes() == x.sizes());
        CHECK(rel_max(fused, composed) < 8e-3);
        CHECK(rel_max(fused, fp32) < 1.6e-2);
      }
    }
  }
  // Shapes the kernel does not take (D not a multiple of 8) fall back to the composition.
  at::Tensor xo = at::randn({1, 3, 12}).to(at::kBFloat16), yo = at::randn({1, 3, 12}).to(at::kBFloat16);
  CHECK(rel_max(nn::gated_residual(cuda_bf16(xo), cuda_bf16(yo), {}, {}), xo.to(at::kFloat) + yo.to(at::kFloat)) < 8e-3);
}

namespace {

// The largest distance between two bf16 tensors in units in the last place (0: the same bits).
int64_t max_ulps(const at::Tensor& a, const at::Tensor& b) {
  auto ordered = [](const at::Tensor& t) {  // bf16 bits as integers in the order of the values
    const at::Tensor bits = t.to(at::kCPU).contiguous().view(at::kShort).to(at::kInt);
    return at::where(bits < 0, -(bits + 32768), bits);
  };
  return (ordered(a) - ordered(b)).abs().max().item<int64_t>();
}

using Modulations = std::vector<std::pair<at::Tensor, at::Tensor>>;

at::Tensor on_cuda(const at::Tensor& t, at::ScalarType dt) { return t.defined() ? t.to(at::kCUDA, dt) : t; }

Modulations on_cuda(const Modulations& mods, at::ScalarType dt) {
  Modulations out;
  for (const auto& [scale1, shift] : mods) out.emplace_back(on_cuda(scale1, dt), on_cuda(shift, dt));
  return out;
}

}  // namespace

TEST_CASE("fused gated_residual_rms equals gated_residual then rms_modulate, for one or two modulations",
          "[cuda]") {
  require_gpu();
  at::manual_seed(13);
  const int64_t B = 2, S = 37;  // 74 rows, 4 to a block: a block holds rows of both items
  for (int64_t D : {2048, 4096, 64}) {
    const at::Tensor x = (at::randn({B, S, D}) * 3).to(at::kBFloat16),
                     y = at::randn({B, S, D}).to(at::kBFloat16);
    const at::Tensor bias = at::randn({D}).to(at::kBFloat16);
    // Gates and (1 + scale, shift) as the blocks take them: rows of [B, 1 or S, 6, D] tables (strided views),
    // per item or per token.
    const at::Tensor item = at::randn({B, 1, 6, D}).to(at::kBFloat16);
    const at::Tensor token = at::randn({B, S, 6, D}).to(at::kBFloat16);
    auto mod = [](const at::Tensor& table, int64_t row) {
      return std::make_pair(1 + 0.5 * table.select(2, row), table.select(2, row + 1));
    };
    const std::pair<at::Tensor, at::Tensor> plain;  // the norm alone
    const std::vector<Modulations> sets = {
        {plain}, {mod(item, 0)}, {mod(token, 0), plain}, {mod(item, 3), mod(token, 3)}};
    for (const at::Tensor& gate : {item.select(2, 2), token.select(2, 5).contiguous(), at::Tensor()}) {
      for (const at::Tensor& b : {bias, at::Tensor()}) {
        for (const bool residual : {true, false}) {
          if (!residual && (gate.defined() || b.defined())) continue;
          for (size_t m = 0; m < sets.size(); ++m) {
            INFO("D " << D
                      << (gate.defined() ? gate.size(1) == 1 ? ", gate per item" : ", gate per token" : "")
                      << (b.defined() ? ", bias" : "") << (residual ? "" : ", no residual")
                      << ", modulations " << m);
            const at::Tensor xc = on_cuda(x, at::kBFloat16),
                             yc = residual ? on_cuda(y, at::kBFloat16) : at::Tensor();
            const at::Tensor gc = on_cuda(gate, at::kBFloat16), bc = on_cuda(b, at::kBFloat16);
            const Modulations mods = on_cuda(sets[m], at::kBFloat16);
            const nn::ResidualNorms fused = nn::gated_residual_rms(xc, yc, gc, bc, 1e-6, mods);
            // The composition on the GPU (its own fused kernels), and the same maths in fp32.
            const at::Tensor xn = residual ? nn::gated_residual(xc, yc, gc, bc) : xc;
            const nn::ResidualNorms fp32 = nn::gated_residual_rms(
                on_cuda(x, at::kFloat), residual ? on_cuda(y, at::kFloat) : at::Tensor(),
                on_cuda(gate, at::kFloat), on_cuda(b, at::kFloat), 1e-6, on_cuda(sets[m], at::kFloat));
            REQUIRE(fused.norms.size() == mods.size());
            CHECK(fused.x.scalar_type() == at::kBFloat16);
            CHECK(fused.x.sizes() == x.sizes());
            if (!residual) CHECK(fused.x.is_same(xc));
            CHECK(max_ulps(fused.x, xn) <= 1);
            CHECK(rel_max(fused.x, fp32.x) < 1.6e-2);
            for (size_t j = 0; j < mods.size(); ++j) {
              INFO("output " << j);
              const at::Tensor composed = nn::rms_modulate(xn, 1e-6, mods[j].first, mods[j].second);
              CHECK(fused.norms[j].sizes() == x.sizes());
              CHECK(max_ulps(fused.norms[j], composed) <= 1);
              CHECK(rel_max(fused.norms[j], fp32.norms[j]) < 1.6e-2);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("fused gated_residual_rms: rows the kernel does not take fall back to the composition", "[cuda]") {
  require_gpu();
  at::manual_seed(14);
  // D 100 (not a multiple of 8), D 8200 (longer than the kernel's rows), and a row 4 bytes past a 16-byte
  // boundary; per-token gate and modulation, bias, two outputs.
  for (const int64_t D : {100, 8200, 256}) {
    const bool misaligned = D == 256;
    INFO("D " << D << (misaligned ? " misaligned" : ""));
    const int64_t B = 2, S = 7;
    const at::Tensor x = (at::randn({B, S, D}) * 3).to(at::kBFloat16),
                     y = at::randn({B, S, D}).to(at::kBFloat16);
    const at::Tensor gate = at::randn({B, S, D}).to(at::kBFloat16), bias = at::randn({D}).to(at::kBFloat16);
    const Modulations mods = {
        {(1 + 0.5 * at::randn({B, S, D})).to(at::kBFloat16), at::randn({B, S, D}).to(at::kBFloat16)}, {}};
    const at::Tensor xc = misaligned ? cuda_bf16_misaligned(x) : cuda_bf16(x);
    const nn::ResidualNorms fused = nn::gated_residual_rms(xc, cuda_bf16(y), cuda_bf16(gate), cuda_bf16(bias),
                                                           1e-6, on_cuda(mods, at::kBFloat16));
    const nn::ResidualNorms composed = nn::gated_residual_rms(x, y, gate, bias, 1e-6, mods);  // on the CPU
    REQUIRE(fused.norms.size() == 2);
    CHECK(rel_max(fused.x, composed.x) < 8e-3);
    CHECK(rel_max(fused.norms[0], composed.norms[0]) < 8e-3);
    CHECK(rel_max(fused.norms[1], composed.norms[1]) < 8e-3);
  }
}

TEST_CASE("fused layer_norm_modulate and qk_norm_rope equal their compositions", "[cuda]") {
  require_gpu();
  at::manual_seed(3);
  at::Tensor x = at::randn({2, 33, 384}).to(at::kBFloat16), s1 = (1 + 0.3 * at::randn({2, 1, 384})).to(at::kBFloat16),
             sh = at::randn({2, 1, 384}).to(at::kBFloat16);
  CHECK(rel_max(nn::layer_norm_modulate(cuda_bf16(x), cuda_bf16(s1), cuda_bf16(sh), 1e-6),
                nn::layer_norm_modulate(x, s1, sh, 1e-6)) < 8e-3);
  at::Tensor q = at::randn({2, 33, 3, 128}).to(at::kBFloat16), w = (1 + 0.2 * at::randn({128})).to(at::kBFloat16);
  at::Tensor ang = at::randn({33, 64});
  at::Tensor freqs = at::complex(at::cos(ang), at::sin(ang));
  CHECK(rel_max(nn::qk_norm_rope(cuda_bf16(q), cuda_bf16(w), 1e-6, freqs.cuda()), nn::qk_norm_rope(q, w, 1e-6, freqs)) <
        8e-3);
}
TEST_CASE("fused qk_norm_rope: head sizes, strided views of a fused projection and the general kernel", "[cuda]") {
  require_gpu();
  at::manual_seed(9);
  // D 64, 128, 256: the vector kernel with 4, 2 or 1 rows a warp; 96: the general kernel (a warp a row).
  // 3 heads x 7 tokens: rows that leave the last warp part empty.
  for (int64_t D : {64, 128, 256, 96}) {
    for (int64_t B : {1, 2}) {
      const int64_t S = 7, H = 3;
      INFO("D " << D << " B " << B);
      const at::Tensor w = (1 + 0.2 * at::randn({D})).to(at::kBFloat16), ang = at::randn({S, D / 2});
      const at::Tensor freqs = at::complex(at::cos(ang), at::sin(ang)), wc = cuda_bf16(w), fc = freqs.cuda();
      // q and k as strided views of a fused [q | k | v | pad] projection: a pad of 8 keeps every row
      // 16-byte aligned, a pad of 2 does not (a token stride of 3 H D + 2 elements: the general kernel).
      for (int64_t pad : {8, 2}) {
        const at::Tensor P = (at::randn({B, S, 3 * H * D + pad}) * 2).to(at::kBFloat16), Pc = cuda_bf16(P);
        for (int64_t part : {0, 1}) {
          INFO("pad " << pad << " part " << part);
          auto view = [&](const at::Tensor& t) { return t.narrow(-1, part * H * D, H * D).view({B, S, H, D}); };
          const at::Tensor fused = nn::qk_norm_rope(view(Pc), wc, 1e-6, fc);
          CHECK(fused.sizes() == view(P).sizes());
          // Two bf16 roundings (the normalised value, then times the weight) may each land a step apart when
          // the sum of squares adds in another order; the rotation then mixes two such values.
          CHECK(rel_max(fused, nn::qk_norm_rope(view(P), w, 1e-6, freqs)) < 1.6e-2);
        }
      }
      // A contiguous x 4 bytes past a 16-byte boundary: the general kernel.
      const at::Tensor q = at::randn({B, S, H, D}).to(at::kBFloat16);
      CHECK(rel_max(nn::qk_norm_rope(cuda_bf16_misaligned(q), wc, 1e-6, fc), nn::qk_norm_rope(q, w, 1e-6, freqs)) <
            8e-3);
    }
  }
}

TEST_CASE("joint_qkv on the GPU: each stream's rows written in place equal the concatenation", "[cuda]") {
  require_gpu();
  at::manual_seed(12);
  const int64_t W = 256, H = 4, D = 128, L = 6, N = 40;
  for (const int64_t B : {1, 2}) {
    for (const bool biased : {false, true}) {
      INFO("B " << B << " biases " << biased);
      const RandomJointStreams s(B, L, N, W, H, D, biased, 0.06,
                                 at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16));
      const auto [Q, K, V] = nn::joint_qkv(s.text, s.image, H, D, 1e-6);
      const auto [Qcat, Kcat, Vcat] = concatenated_qkv(s.text, s.image, H, D, 1e-6);
      // q and k: the same kernel on the same projections, written at an item stride of (L + N) rows.
      CHECK(at::equal(Q, Qcat));
      CHECK(at::equal(K, Kcat));
      // v: with one item the GEMM writes its rows of the joint tensor (a row stride cuBLAS may pick another
      // kernel for); with two the product is copied in.
      CHECK(rel_max(V, Vcat) < 1e-2);
      if (B == 2) CHECK(at::equal(V, Vcat));
    }
  }
}

TEST_CASE("linears of more rows than one GEMM takes run in row chunks with the same results", "[cuda]") {
  require_gpu();
  at::manual_seed(21);
  // 8200 rows of a 8192 x 8192 weight: two chunks of 4100 rows (DITGEN_GEMM_ROWS' default 8192).
  const int64_t M = 8200, K = 8192, N = 8192;
  const at::Tensor x = at::randn({2, M / 2, K}, at::kCUDA).to(at::kBFloat16);
  const nn::Linear l((at::randn({N, K}, at::kCUDA) * 0.02).to(at::kBFloat16));
  const at::Tensor bias = at::randn({N}, at::kCUDA).to(at::kBFloat16);
  const at::Tensor plain = at::linear(x, l.weight), biased = at::linear(x, l.weight, bias);
  const at::Tensor y = nn::linear(x, l), yb = nn::linear(x, l, bias), yg = nn::linear_gelu_tanh(x, l, bias);
  CHECK(y.sizes() == plain.sizes());
  CHECK(rel_max(y, plain) < 1e-2);
  CHECK(rel_max(yb, biased) < 1e-2);
  CHECK(rel_max(yg, at::gelu(biased.to(at::kFloat), "tanh").to(at::kBFloat16)) < 2e-2);
  // Each chunk's rows as that chunk alone gives them.
  CHECK(at::equal(y.view({M, N}).narrow(0, M / 2, M / 2), nn::linear(x[1], l)));
}

TEST_CASE("linear_gelu_tanh in the GEMM epilogue equals the linear then GELU", "[cuda]") {
  require_gpu();
  at::manual_seed(4);
  at::Tensor x = at::randn({2, 40, 256}).to(at::kBFloat16), w = (at::randn({512, 256}) * 0.06).to(at::kBFloat16),
             b = (at::randn({512}) * 0.1).to(at::kBFloat16);
  const at::Tensor fused = nn::linear_gelu_tanh(cuda_bf16(x), nn::Linear(cuda_bf16(w)), cuda_bf16(b));
  const at::Tensor composed = at::gelu(at::linear(cuda_bf16(x), cuda_bf16(w), cuda_bf16(b)), "tanh");
  const at::Tensor fp32 = nn::linear_gelu_tanh(x.to(at::kFloat).cuda(), nn::Linear(w.to(at::kFloat).cuda()),
                                               b.to(at::kFloat).cuda());
  CHECK(fused.sizes() == composed.sizes());
  CHECK(rel_max(fused, composed) < 8e-3);
  CHECK(rel_max(fused, fp32) < 1.6e-2);
}
TEST_CASE("fused swiglu_concat equals silu, mul and cat, from strided halves of a wider projection", "[cuda]") {
  require_gpu();
  at::manual_seed(5);
  const int64_t B = 2, S = 21, Da = 64, F = 96;
  at::Tensor P = (at::randn({B, S, Da + 2 * F + 32}) * 2).to(at::kBFloat16);  // [a | gate | up | more]
  const at::Tensor a = P.narrow(-1, 0, Da), gu = P.narrow(-1, Da, 2 * F);
  for (const at::Tensor& first : {a, at::Tensor()}) {
    const at::Tensor Pc = cuda_bf16(P);
    const at::Tensor fused = nn::swiglu_concat(first.defined() ? Pc.narrow(-1, 0, Da) : at::Tensor(), Pc.narrow(-1, Da, 2 * F));
    const at::Tensor composed = nn::swiglu_concat(first, gu);  // the CPU composition
    CHECK(fused.sizes() == composed.sizes());
    CHECK(fused.is_contiguous());
    CHECK(rel_max(fused, composed) < 8e-3);
  }
}

TEST_CASE("FP8: the GELU in the quantiser and one quantisation for q, k and v match the plain FP8 ops", "[cuda]") {
  require_gpu();
  if (!nn::fp8_unavailable_reason(at::Device(at::kCUDA)).empty()) {
    WARN("no FP8 tensor cores on this GPU: not checked");
    return;
  }
  at::manual_seed(6);
  const nn::Linear in = nn::quantize_fp8(nn::Linear(cuda_bf16(at::randn({512, 256}) * 0.06)));
  const nn::Linear out = nn::quantize_fp8(nn::Linear(cuda_bf16(at::randn({256, 512}) * 0.04)));
  const at::Tensor x = cuda_bf16(at::randn({2, 40, 256})), b = cuda_bf16(at::randn({512}) * 0.1);
  const at::Tensor fused = nn::gelu_tanh_mlp(x, in, b, out);
  const at::Tensor plain = nn::linear(at::gelu(nn::linear(x, in, b), "tanh"), out);
  CHECK(fused.sizes() == plain.sizes());
  CHECK(rel_max(fused, plain) < 1e-2);

  const at::Tensor alone_in = nn::linear(x, in);
  at::Tensor y = x.clone();
  at::Tensor first, second, changed;
  {
    const nn::ReuseQuantisedInput once;
    first = nn::linear(y, in);
    second = nn::linear(y, in, b);  // reuses y's quantised rows
    y.mul_(2);                      // an in-place change: quantised again
    changed = nn::linear(y, in);
  }
  CHECK(at::equal(first, alone_in));
  CHECK(rel_max(second, nn::linear(x, in, b)) < 1e-6);
  CHECK(rel_max(changed, nn::linear(x * 2, in)) < 1e-6);
}
// The row kernels' register / shared-memory paths against their fallbacks and the ATen maths. The
// quantisers are called directly: their e4m3 rows are compared bit for bit.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "lib/nn/fp8_quant_cuda.h"

namespace {

void* current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// (q as float [rows, K], scale [rows]) of quantize_rows_fp8_bf16 on contiguous bf16 [rows, K].
std::pair<at::Tensor, at::Tensor> quantize_rows(const at::Tensor& x, bool gelu) {
  const int64_t rows = x.size(0), K = x.size(1);
  at::Tensor q = at::empty({rows, K}, x.options().dtype(at::kFloat8_e4m3fn));
  at::Tensor scale = at::empty({rows}, x.options().dtype(at::kFloat));
  REQUIRE(nn::quantize_rows_fp8_bf16(x.data_ptr(), q.data_ptr(), scale.data_ptr<float>(), rows, K, current_stream(),
                                     gelu));
  return {q.to(at::kFloat), scale};
}

// q, scale of a row-wise quantiser against the fp32 rows xf they quantise: the scale is amax / 448 (to
// `scale_tol`), and q * scale is xf to within half an e4m3 step (2^-4 of the value, or of a subnormal step).
void check_quantised(const at::Tensor& q, const at::Tensor& scale, const at::Tensor& xf, double scale_tol,
                     double value_tol) {
  const at::Tensor amax = xf.abs().amax(1);
  const at::Tensor want = at::where(amax > 0, amax / 448.0, at::ones_like(amax));
  CHECK(((scale - want).abs() <= want * scale_tol).all().item<bool>());
  const at::Tensor s = scale.unsqueeze(1);
  CHECK(((q * s - xf).abs() <= xf.abs() * value_tol + s * std::ldexp(1.0, -9)).all().item<bool>());
}

}  // namespace

TEST_CASE("FP8 row quantiser: rows held in registers equal the two-pass kernel bit for bit, and the maths",
          "[cuda]") {
  require_gpu();
  at::manual_seed(7);
  // K: one vector (a single warp), LTX-2 audio's 2048, a width with a partly filled warp, LTX-2 video's
  // 16384 (1024 threads), 24576 (four vectors a thread); 40960 and up take the two-pass kernel.
  const int64_t K_long = 40960;
  for (int64_t K : {8, 2048, 4120, 16384, 24576}) {
    for (int64_t rows : {3, 260}) {
      at::Tensor x = cuda_bf16(at::randn({rows, K}) * 3);
      x.select(0, 1).zero_();  // a zero row: scale 1
      // The same rows padded with zeros past the register path's reach: same maximum (GELU(0) = 0), so the
      // two-pass kernel must give the same scale and, on the first K columns, the same e4m3 values.
      const at::Tensor x_long = at::cat({x, at::zeros({rows, K_long - K}, x.options())}, 1);
      for (bool gelu : {false, true}) {
        INFO("K " << K << ", rows " << rows << (gelu ? ", GELU" : ""));
        const auto [q, scale] = quantize_rows(x, gelu);
        const auto [q_long, scale_long] = quantize_rows(x_long, gelu);
        CHECK(at::equal(scale, scale_long));
        CHECK(at::equal(q, q_long.narrow(1, 0, K)));
        CHECK(at::equal(scale[1], at::ones({}, scale.options())));
        const at::Tensor xf = (gelu ? at::gelu(x, "tanh") : x).to(at::kFloat);
        // at::gelu may round a value one bf16 step from the kernel's GELU.
        check_quantised(q, scale, xf, gelu ? 8e-3 : 1e-6, gelu ? 0.0625 + 8e-3 : 0.0625 + 1e-6);
      }
    }
  }
}

TEST_CASE("FP8 SwiGLU quantiser: the shared-memory row equals the two-pass kernel bit for bit, and the maths",
          "[cuda]") {
  require_gpu();
  at::manual_seed(8);
  // FLUX.2's single block (6144 + 18432, one in ten of its rows) and a small row, from strided halves of
  // a wider projection; with `a` and without. F_long puts a row past the shared-memory path (96 KB).
  const int64_t F_long = 50176;
  struct Shape {
    int64_t rows, Da, F;
  };
  for (const Shape& sh : {Shape{3, 64, 96}, Shape{200, 64, 96}, Shape{461, 6144, 18432}, Shape{5, 0, 1000}}) {
    const int64_t rows = sh.rows, Da = sh.Da, F = sh.F;
    INFO("rows " << rows << ", Da " << Da << ", F " << F);
    const at::Tensor P = cuda_bf16(at::randn({rows, Da + 2 * F + 16}) * 2);  // [a | gate | up | more]
    const at::Tensor a = P.narrow(1, 0, Da), gate = P.narrow(1, Da, F), up = P.narrow(1, Da + F, F);
    // The same rows with gate and up padded by zeros (silu(0) * 0 = 0), as one contiguous projection.
    const at::Tensor zeros = at::zeros({rows, F_long - F}, P.options());
    const at::Tensor P_long = at::cat({a, gate, zeros, up, zeros}, 1);
    auto run = [&](const at::Tensor& proj, int64_t f) {
      at::Tensor q = at::empty({rows, Da + f}, proj.options().dtype(at::kFloat8_e4m3fn));
      at::Tensor scale = at::empty({rows}, proj.options().dtype(at::kFloat));
      REQUIRE(nn::swiglu_concat_quantize_fp8_bf16(Da > 0 ? proj.data_ptr() : nullptr, proj.stride(0), Da,
                                                  static_cast<at::BFloat16*>(proj.data_ptr()) + Da, proj.stride(0), f,
                                                  q.data_ptr(), scale.data_ptr<float>(), rows, current_stream()));
      return std::make_pair(q.to(at::kFloat), scale);
    };
    const auto [q, scale] = run(P, F);
    const auto [q_long, scale_long] = run(P_long, F_long);
    CHECK(at::equal(scale, scale_long));
    CHECK(at::equal(q, q_long.narrow(1, 0, Da + F)));
    const at::Tensor h = at::silu(gate) * up;  // bf16, as the unfused ops round it
    check_quantised(q, scale, (Da > 0 ? at::cat({a, h}, 1) : h).to(at::kFloat), 8e-3, 0.0625 + 8e-3);
  }
}

TEST_CASE("fused swiglu_concat: vectorised rows of one or several blocks, and unaligned strides", "[cuda]") {
  require_gpu();
  at::manual_seed(9);
  struct Shape {
    int64_t rows, Da, F, extra;
  };
  // extra = 16 keeps every row 16-byte aligned; extra = 3 does not (the ATen composition then).
  for (const Shape& sh : {Shape{3, 1536, 4608, 16}, Shape{300, 64, 96, 16}, Shape{2, 0, 2056, 16},
                          Shape{7, 64, 96, 3}}) {
    INFO("rows " << sh.rows << ", Da " << sh.Da << ", F " << sh.F << ", extra " << sh.extra);
    const at::Tensor P = (at::randn({1, sh.rows, sh.Da + 2 * sh.F + sh.extra}) * 2).to(at::kBFloat16);
    const at::Tensor Pc = cuda_bf16(P);
    const at::Tensor a = sh.Da > 0 ? P.narrow(-1, 0, sh.Da) : at::Tensor();
    const at::Tensor fused =
        nn::swiglu_concat(sh.Da > 0 ? Pc.narrow(-1, 0, sh.Da) : at::Tensor(), Pc.narrow(-1, sh.Da, 2 * sh.F));
    const at::Tensor composed = nn::swiglu_concat(a, P.narrow(-1, sh.Da, 2 * sh.F));
    CHECK(fused.sizes() == composed.sizes());
    CHECK(rel_max(fused, composed) < 8e-3);
  }
}

TEST_CASE("fused layer_norm_modulate: register rows of several widths, and the pair kernel for the others",
          "[cuda]") {
  require_gpu();
  at::manual_seed(10);
  // 3072 (Qwen), 6144 (FLUX.2), 12288 (four vectors a thread), 16392 (too long), 390 (not a multiple of 8).
  for (int64_t D : {384, 3072, 6144, 12288, 16392, 390}) {
    for (int64_t S : {5, 300}) {
      INFO("D " << D << ", S " << S);
      const at::Tensor x = (at::randn({2, S, D}) * 3 + 1).to(at::kBFloat16);
      const at::Tensor s1 = (1 + 0.3 * at::randn({2, 1, D})).to(at::kBFloat16);
      const at::Tensor sh = at::randn({2, 1, D}).to(at::kBFloat16);
      const at::Tensor composed = nn::layer_norm_modulate(x, s1, sh, 1e-6);
      const at::Tensor fused = nn::layer_norm_modulate(cuda_bf16(x), cuda_bf16(s1), cuda_bf16(sh), 1e-6);
      CHECK(rel_max(fused, composed) < 8e-3);
      // scale and shift 4- but not 16-byte aligned: the pair kernel, the same up to the sums' order.
      const at::Tensor buf = cuda_bf16(at::cat({at::zeros({2}, s1.options()), s1.flatten(), sh.flatten()}));
      const at::Tensor s1u = buf.narrow(0, 2, 2 * D).view({2, 1, D});
      const at::Tensor shu = buf.narrow(0, 2 + 2 * D, 2 * D).view({2, 1, D});
      const at::Tensor pairs = nn::layer_norm_modulate(cuda_bf16(x), s1u, shu, 1e-6);
      CHECK(rel_max(pairs, fused) < 8e-3);
      CHECK(rel_max(pairs, composed) < 8e-3);
    }
  }
}
TEST_CASE("linear_residual: the cuBLASLt GEMM with the residual in its epilogue equals the linear and the residual "
          "apart (bf16, fp32, with and without bias or a gate, inside a CUDA graph)",
          "[cuda]") {
  require_gpu();
  at::manual_seed(12);
  // x large enough for the fused GEMM (>= 2^20 elements), as the models' residual streams are.
  const int64_t B = 2, S = 1024, N = 768, K = 320;
  const at::Tensor x = at::randn({B, S, N}) * 2, a = at::randn({B, S, K}), w = at::randn({N, K}) * 0.05;
  const at::Tensor bias = at::randn({N}) * 0.1, table = at::randn({B, 1, 6, N});
  for (const at::ScalarType dt : {at::kBFloat16, at::kFloat}) {
    auto dev = [&](const at::Tensor& t) { return t.defined() ? t.to(at::kCUDA, dt) : t; };
    const nn::Linear l(dev(w));
    for (const at::Tensor& gate : {table.select(2, 2), at::Tensor()}) {  // a strided modulation row, and none
      for (const at::Tensor& b : {bias, at::Tensor()}) {
        // The reference in fp32 from the same (rounded) inputs.
        auto f32 = [&](const at::Tensor& t) { return t.defined() ? dev(t).to(at::kFloat) : t; };
        at::Tensor y = at::linear(f32(a), f32(w));
        if (b.defined()) y = y + f32(b);
        const at::Tensor expect = gate.defined() ? f32(x) + f32(gate) * y : f32(x) + y;
        const at::Tensor fused = nn::linear_residual(dev(x), dev(a), l, dev(b), dev(gate));
        const at::Tensor apart = nn::gated_residual(dev(x), nn::linear(dev(a), l), dev(gate), dev(b));
        CHECK(fused.scalar_type() == dt);
        CHECK(fused.sizes() == x.sizes());
        CHECK(rel_max(fused, expect) < (dt == at::kFloat ? 1e-5 : 8e-3));
        CHECK(rel_max(apart, expect) < (dt == at::kFloat ? 1e-5 : 1.6e-2));
      }
    }
  }
  // A reduce (TP) or a per-token gate: the linear, the reduce, then the residual.
  const at::Tensor xb = x.to(at::kCUDA, at::kBFloat16), ab = a.to(at::kCUDA, at::kBFloat16);
  const nn::Linear lb(w.to(at::kCUDA, at::kBFloat16));
  const at::Tensor y = at::linear(ab.to(at::kFloat), lb.weight.to(at::kFloat));
  const at::Tensor doubled = nn::linear_residual(xb, ab, lb, {}, {}, [](at::Tensor& t) { t.mul_(2); });
  CHECK(rel_max(doubled, xb.to(at::kFloat) + 2 * y) < 1.6e-2);
  const at::Tensor per_token = at::randn({B, S, N}).to(at::kCUDA, at::kBFloat16);
  CHECK(rel_max(nn::linear_residual(xb, ab, lb, {}, per_token), xb.to(at::kFloat) + per_token.to(at::kFloat) * y) <
        1.6e-2);
  // Captured in a CUDA graph (as the models' blocks are) and replayed on new inputs.
  const at::Tensor bb = bias.to(at::kCUDA, at::kBFloat16);
  at::Tensor xs = xb.clone(), out;
  const at::cuda::CUDAStream side = at::cuda::getStreamFromPool();
  at::cuda::CUDAGraph graph;
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    out = nn::linear_residual(xs, ab, lb, bb, {});  // warm-up: the plan
    graph.capture_begin();
    out = nn::linear_residual(xs, ab, lb, bb, {});
    graph.capture_end();
  }
  xs.copy_(xb * 3);
  graph.replay();
  at::cuda::getCurrentCUDAStream().synchronize();
  side.synchronize();
  CHECK(rel_max(out, 3 * xb.to(at::kFloat) + y + bb.to(at::kFloat)) < 1.6e-2);
}
#endif  // DITGEN_CUDA
