// The fused CUDA kernels against the ATen compositions they replace (CUDA builds; run on a GPU with
// `ditgen_tests "[cuda]"`). The composition is what every CPU run and fp32 GPU run executes, so each
// kernel is checked against it on the same bf16 inputs (computed on the CPU), and both against an fp32
// reference of the same maths: the fused result may differ from the composition only by bf16 rounding.
#ifdef DITGEN_CUDA
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

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
          CHECK(rel_max(fused, nn::qk_norm_rope(view(P), w, 1e-6, freqs)) < 8e-3);
        }
      }
      // A contiguous x 4 bytes past a 16-byte boundary: the general kernel.
      const at::Tensor q = at::randn({B, S, H, D}).to(at::kBFloat16);
      CHECK(rel_max(nn::qk_norm_rope(cuda_bf16_misaligned(q), wc, 1e-6, fc), nn::qk_norm_rope(q, w, 1e-6, freqs)) <
            8e-3);
    }
  }
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
#endif  // DITGEN_CUDA
