// The transformer work per denoising step (lib/pipeline/step_work.h, models/*/work.h) against the
// anchors measured before (issue 10): FLUX.2-dev at 1024x1024 (4096 image + 512 text tokens) 282.5 TFLOP,
// Qwen-Image at 1024x1024 with true CFG (250 + 6 text tokens) 141.1 TFLOP, LTX-2's default video with CFG
// on both streams about 395 TFLOP; and the report path through the Model interface.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "lib/parallel/context.h"
#include "lib/pipeline/runner.h"
#include "lib/runtime/embedded_configs.h"
#include "models/flux2/pipeline.h"
#include "models/flux2/work.h"
#include "models/ltx2/work.h"
#include "models/qwen_image/work.h"

using namespace ditgen;

TEST_CASE("step work: counter sums and picks the dominant shapes", "[step_work]") {
  pipeline::WorkCounter w;
  w.linear(10, 20, 30);           // 12000
  w.linear(4, 5, 6, 3);           // 720
  w.attention(1, 2, 8, 8, 4, 2);  // 4096
  w.attention(1, 2, 8, 3, 4);     // 768
  const pipeline::StepWork r = w.result();
  CHECK(r.matmul_flop == 12720);
  CHECK(r.attention_flop == 4864);
  CHECK(r.gemm_shape == std::array<int64_t, 3>{10, 20, 30});
  CHECK(r.attention_shape == std::array<int64_t, 4>{1, 2, 8, 4});
  CHECK(r.attention_keys == 0);
  const auto j = r.to_json();
  CHECK(j["gemm_shape"] == nlohmann::json({10, 20, 30}));
  CHECK(!j.contains("attention_keys"));
  CHECK(pipeline::StepWork{}.empty());
}

TEST_CASE("step work: FLUX.2-dev at 1024x1024 is 282.5 TFLOP", "[step_work]") {
  const flux2::TransformerConfig real;  // the struct's defaults are FLUX.2-dev's (configs/flux2.json)
  const auto w = flux2::step_work(real, 64 * 64, 512, 1);
  CHECK((w.matmul_flop + w.attention_flop) / 1e12 == Approx(282.5).epsilon(0.01));
  CHECK(w.attention_flop / 1e12 == Approx(56 * 4.0 * 4608 * 4608 * 6144 / 1e12).epsilon(1e-9));
  CHECK(w.gemm_shape == std::array<int64_t, 3>{4608, 6144, 3 * 6144 + 2 * 18432});  // single blocks' fused input
  CHECK(w.attention_shape == std::array<int64_t, 4>{1, 48, 4608, 128});
  // The batch multiplies the work.
  const auto w2 = flux2::step_work(real, 64 * 64, 512, 2);
  CHECK(w2.matmul_flop == Approx(2 * w.matmul_flop));
  CHECK(w2.attention_shape[0] == 2);
}

TEST_CASE("step work: Qwen-Image at 1024x1024 with true CFG is 141.1 TFLOP", "[step_work]") {
  const qwen_image::TransformerConfig real;  // Qwen-Image's
  const auto w = qwen_image::step_work(real, 64 * 64, {250, 6}, 1);
  CHECK((w.matmul_flop + w.attention_flop) / 1e12 == Approx(141.1).epsilon(0.01));
  const auto one = qwen_image::step_work(real, 64 * 64, {128}, 1);
  CHECK((one.matmul_flop + one.attention_flop) / 1e12 == Approx(70.6).epsilon(0.01));
}

TEST_CASE("step work: LTX-2's default video with CFG is about 387 TFLOP", "[step_work]") {
  const auto preset = nlohmann::json::parse(embedded_configs().at("ltx2"));
  const auto real = ltx2::TransformerConfig::from_json(preset["transformer"], "configs/ltx2.json transformer");
  // 768x512, 121 frames: 16 latent frames x 16 x 24 cells; 126 audio rows; 1024 text rows.
  const auto w = ltx2::step_work(real, 16 * 16 * 24, 126, 1024, 1, 2);
  CHECK((w.matmul_flop + w.attention_flop) / 1e12 == Approx(387).epsilon(0.02));
  CHECK(w.attention_shape == std::array<int64_t, 4>{1, 32, 6144, 128});
  const auto one = ltx2::step_work(real, 16 * 16 * 24, 126, 1024, 1, 1);
  CHECK(one.matmul_flop == Approx(w.matmul_flop / 2));
  // --offload: the text keys and values projected in every step (4096- and 2048-wide, 48 blocks, 2 branches).
  const auto streamed = ltx2::step_work(real, 16 * 16 * 24, 126, 1024, 1, 2, /*text_keys_per_step=*/true);
  CHECK(streamed.matmul_flop - w.matmul_flop == Approx(2.0 * 1024 * (4096.0 * 4096 + 2048.0 * 2048) * 2 * 96));
}

TEST_CASE("step work: the tiny FLUX.2 through the Model interface", "[step_work]") {
  flux2::LoadOptions opt;
  flux2::Pipeline model(opt, parallel::Context::single());
  pipeline::GenerateRequest req;
  const pipeline::Settings s = pipeline::resolve_settings(req, model, at::kCPU, at::kFloat);
  const pipeline::StepWork w = model.step_work(s);
  const auto preset = nlohmann::json::parse(embedded_configs().at("flux2"));
  const auto tiny = flux2::TransformerConfig::from_json(preset["tiny"]["transformer"], "tiny");
  const int64_t m = model.pixel_multiple();
  const auto expect = flux2::step_work(tiny, (s.height / m) * (s.width / m), s.max_sequence_length, 1);
  CHECK(!w.empty());
  CHECK(w.matmul_flop == expect.matmul_flop);
  CHECK(w.attention_flop == expect.attention_flop);
}
