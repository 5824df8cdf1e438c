// FP8 attention (`--attention fp8`, cuDNN's FP8 flash attention on Hopper) against the fp32 attention of
// the same bf16 inputs (CUDA builds with the cuDNN frontend; `ditgen_tests "[cuda]"`). FP8 keeps 3 mantissa
// bits, so the bound is on the relative RMS error, reported beside bf16 attention's own.
#ifdef DITGEN_CUDA
#include <ATen/ATen.h>

#include <catch2/catch.hpp>

#include "lib/nn/graphs.h"
#include "lib/nn/ops.h"
#include "lib/runtime/error.h"

#ifdef DITGEN_FP8_ATTENTION
#include "lib/nn/attention_fp8_cuda.h"
#endif

using namespace ditgen;

#ifdef DITGEN_FP8_ATTENTION
namespace {

void require_gpu() {
  if (!at::hasCUDA()) FAIL("this CUDA build's FP8 attention tests need a GPU");
}

// RMS of (a - ref) over RMS of ref, in fp32 on the CPU.
double rel_rms(const at::Tensor& a, const at::Tensor& ref) {
  const at::Tensor x = a.to(at::kCPU, at::kFloat), y = ref.to(at::kCPU, at::kFloat);
  return (x - y).pow(2).mean().sqrt().item<double>() / std::max(y.pow(2).mean().sqrt().item<double>(), 1e-20);
}

struct Qkv {
  at::Tensor q, k, v;  // bf16 on the GPU, [B, S, H, D]
};

// Inputs like a transformer's after QK normalisation: unit-RMS q and k (times a spread of gains), v free.
Qkv make_qkv(int64_t B, int64_t Sq, int64_t Sk, int64_t H, int64_t D, uint64_t seed) {
  at::manual_seed(seed);
  const auto f = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor gain = at::rand({H, D}, f) * 1.5 + 0.25;
  auto on_gpu = [](const at::Tensor& t) { return t.to(at::kCUDA, at::kBFloat16); };
  return {on_gpu(at::randn({B, Sq, H, D}, f) * gain), on_gpu(at::randn({B, Sk, H, D}, f) * gain),
          on_gpu(at::randn({B, Sk, H, D}, f) * 2)};
}

// --attention for one scope: the process-wide choice returns to auto even when a REQUIRE ends the test early.
struct BackendScope {
  explicit BackendScope(nn::AttentionBackend b) { nn::set_attention_backend(b); }
  ~BackendScope() { nn::set_attention_backend(nn::AttentionBackend::Auto); }
};

nn::AttentionLse reference(const Qkv& x) {  // fp32 on the CPU, from the same bf16 values
  return nn::attention_with_lse(x.q.to(at::kCPU, at::kFloat), x.k.to(at::kCPU, at::kFloat),
                                x.v.to(at::kCPU, at::kFloat));
}

}  // namespace

TEST_CASE("FP8 attention is within FP8's rounding of fp32 attention, with its log-sum-exp", "[cuda]") {
  require_gpu();
  struct Shape {
    int64_t B, Sq, Sk, H, D;
  };
  for (const Shape s : {Shape{2, 1024, 1024, 4, 128}, Shape{1, 777, 333, 3, 64}, Shape{2, 96, 1500, 2, 128},
                        Shape{2, 3072, 2048, 4, 64}, Shape{1, 2304, 2304, 2, 128}}) {
    CAPTURE(s.B, s.Sq, s.Sk, s.H, s.D);
    const Qkv x = make_qkv(s.B, s.Sq, s.Sk, s.H, s.D, 7);
    const nn::AttentionLse ref = reference(x);
    std::string why;
    const auto r = nn::fp8_attention_cuda(x.q, x.k, x.v, /*want_lse=*/true, &why);
    INFO(why);
    REQUIRE(r.has_value());
    REQUIRE(r->out.sizes() == x.q.sizes());
    REQUIRE(r->out.scalar_type() == at::kBFloat16);
    REQUIRE(r->lse.sizes() == at::IntArrayRef({s.B, s.Sq, s.H}));
    const auto plain = nn::fp8_attention_cuda(x.q, x.k, x.v, /*want_lse=*/false, &why);
    REQUIRE(plain.has_value());
    CHECK(at::equal(plain->out, r->out));  // the log-sum-exp changes nothing else
    const double bf16_err = rel_rms(nn::attention(x.q, x.k, x.v), ref.out);
    const double fp8_err = rel_rms(r->out, ref.out);
    const double lse_err = (r->lse.to(at::kCPU) - ref.lse).abs().max().item<double>();
    WARN("FP8 attention [" << s.B << ", " << s.Sq << "/" << s.Sk << ", " << s.H << ", " << s.D
                           << "]: relative RMS error " << fp8_err << " (bf16 attention " << bf16_err
                           << "), log-sum-exp max error " << lse_err);
    // Measured on an H100: 0.071-0.074 (bf16 attention 0.002), log-sum-exp 0.12-0.13.
    CHECK(fp8_err < 0.1);
    CHECK(lse_err < 0.2);
    CHECK_FALSE(at::isnan(r->out).any().item<bool>());
  }
}

TEST_CASE("FP8 attention reads strided q, k, v as their contiguous copies; a zero v gives zeros", "[cuda]") {
  require_gpu();
  const Qkv x = make_qkv(2, 256, 256, 4, 64, 11);
  // q, k, v as views into one [B, S, 3, H, D] projection, as the models' fused QKV GEMMs give them.
  const at::Tensor fused = at::stack({x.q, x.k, x.v}, 2);
  const auto a =
      nn::fp8_attention_cuda(fused.select(2, 0), fused.select(2, 1), fused.select(2, 2), false, nullptr);
  const auto b = nn::fp8_attention_cuda(x.q, x.k, x.v, false, nullptr);
  REQUIRE(a.has_value());
  REQUIRE(b.has_value());
  CHECK(at::equal(a->out, b->out));
  const auto z = nn::fp8_attention_cuda(x.q, x.k, at::zeros_like(x.v), false, nullptr);
  REQUIRE(z.has_value());
  CHECK(z->out.abs().max().item<float>() == 0.f);
}

TEST_CASE("--attention fp8 runs bf16 attention where FP8 does not apply, and says why", "[cuda]") {
  require_gpu();
  const Qkv x = make_qkv(1, 2048, 2048, 2, 72, 3);  // head size 72: not a multiple of 16
  std::string why;
  CHECK_FALSE(nn::fp8_attention_cuda(x.q, x.k, x.v, false, &why).has_value());
  CHECK(why.find("head size 72") != std::string::npos);
  const at::Tensor bf16 = nn::attention(x.q, x.k, x.v);
  at::Tensor fallback;
  {
    const BackendScope fp8(nn::AttentionBackend::Fp8);
    fallback = nn::attention(x.q, x.k, x.v);
  }
  CHECK(at::equal(bf16, fallback));
  CHECK_FALSE(
      nn::fp8_attention_cuda(x.q.to(at::kFloat), x.k.to(at::kFloat), x.v.to(at::kFloat), false, &why));
  CHECK(why.find("bf16") != std::string::npos);
  // Attention of 2048 queries and keys or more runs FP8; shorter ones run bf16 (faster there).
  const Qkv big = make_qkv(1, 2048, 2048, 2, 64, 4), small = make_qkv(1, 2047, 2047, 2, 64, 5);
  at::Tensor big8, small8;
  {
    const BackendScope fp8(nn::AttentionBackend::Fp8);
    big8 = nn::attention(big.q, big.k, big.v);
    small8 = nn::attention(small.q, small.k, small.v);
  }
  CHECK(at::equal(big8, nn::fp8_attention_cuda(big.q, big.k, big.v, false, nullptr)->out));
  CHECK(at::equal(small8, nn::attention(small.q, small.k, small.v)));
}

TEST_CASE("FP8 attention replays in a CUDA graph what it computes eagerly", "[cuda]") {
  require_gpu();
  const BackendScope fp8(nn::AttentionBackend::Fp8);
  nn::BlockGraphs graphs;
  for (int call = 0; call < 3; ++call) {
    const Qkv x = make_qkv(2, 2048, 2048, 4, 128, 20 + call);
    const at::Tensor eager = nn::attention(x.q, x.k, x.v);
    at::Tensor q = x.q.clone(), k = x.k.clone(), v = x.v.clone(), out;
    graphs.run(true, {&q, &k, &v, &out}, {}, [&] { out = nn::attention(q, k, v); });
    CHECK(graphs.captured() == (call == 0 ? 0 : 1));
    REQUIRE(out.defined());
    CHECK(at::equal(out, eager));
  }
}

#else

TEST_CASE("--attention fp8 in a CUDA build without the cuDNN frontend is an error naming what to configure",
          "[cuda]") {
  try {
    nn::set_attention_backend(nn::AttentionBackend::Fp8);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("CUDNN_FRONTEND_ROOT") != std::string::npos);
  }
}

#endif
#endif
