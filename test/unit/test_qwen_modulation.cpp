// Qwen-Image's modulation vectors for a whole schedule (Transformer::modulation_table): each forward that
// names its schedule takes its row of the table instead of its own per-layer GEMVs, with the same outputs.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <vector>

#include "lib/nn/weights.h"
#include "lib/parallel/context.h"
#include "lib/pipeline/model.h"
#include "lib/runtime/embedded_configs.h"
#include "models/qwen_image/transformer.h"

using namespace ditgen;

namespace {

struct Tiny {
  qwen_image::TransformerConfig cfg = qwen_image::TransformerConfig::from_json(
      nlohmann::json::parse(embedded_configs().at("qwen_image"))["tiny"]["transformer"], "tiny");
  std::shared_ptr<nn::RandomSource> weights = std::make_shared<nn::RandomSource>(17);
  qwen_image::Transformer make() const {
    return qwen_image::Transformer(cfg, nn::Weights(weights, at::kFloat, at::kCPU), parallel::Context::single());
  }
};

qwen_image::TransformerInput input(const qwen_image::TransformerConfig& cfg, int64_t batch, float t,
                                   const std::vector<float>* schedule) {
  at::manual_seed(3);
  qwen_image::TransformerInput in;
  in.hidden_states = at::randn({batch, 12, cfg.in_channels});
  in.encoder_hidden_states = at::randn({batch, 5, cfg.joint_attention_dim});
  in.timestep = pipeline::model_timestep(t, batch, at::kFloat, at::kCPU);
  in.frames = 1;
  in.height = 3;
  in.width = 4;
  in.schedule = schedule;
  in.t = t;
  return in;
}

}  // namespace

TEST_CASE("Qwen-Image modulation table: every step of a schedule, one or two items, a new schedule, a step "
          "outside it, no room to keep it",
          "[qwen_image]") {
  Tiny tiny;
  const qwen_image::Transformer kept = tiny.make(), plain = tiny.make();
  const std::vector<float> four{1000.f, 750.f, 500.f, 250.f}, three{1000.f, 600.f, 300.f};
  auto same = [&](const qwen_image::TransformerInput& in) {
    qwen_image::TransformerInput without = in;
    without.schedule = nullptr;
    const at::Tensor a = kept.forward(in), b = plain.forward(without);
    CHECK(at::allclose(a, b, 1e-5, 1e-6));
    return at::equal(a, b);
  };
  for (int64_t batch : {1, 2})
    for (float t : four) same(input(tiny.cfg, batch, t, &four));  // one GEMM for all steps: close, not bitwise
  for (float t : three) same(input(tiny.cfg, 1, t, &three));  // a new schedule: a new table
  CHECK(same(input(tiny.cfg, 1, 420.f, &three)));  // not among the steps: its own GEMVs
  ::setenv("DITGEN_TEST_AVAILABLE_BYTES", "1000", 1);  // no room: no table, the GEMVs in every forward
  for (float t : four) CHECK(same(input(tiny.cfg, 1, t, &four)));
  ::unsetenv("DITGEN_TEST_AVAILABLE_BYTES");
}
