// LTX-2's text keys and values, projected once per prompt (Transformer::TextCache): every forward equals a
// transformer that has seen no text before, whatever the prompts, branches and in-place changes between calls.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cstdlib>

#include "lib/nn/weights.h"
#include "lib/parallel/context.h"
#include "lib/runtime/embedded_configs.h"
#include "models/ltx2/transformer.h"

using namespace ditgen;

namespace {

struct Tiny {
  ltx2::TransformerConfig cfg = ltx2::TransformerConfig::from_json(
      nlohmann::json::parse(embedded_configs().at("ltx2"))["tiny"]["transformer"], "tiny");
  std::shared_ptr<nn::RandomSource> weights = std::make_shared<nn::RandomSource>(21);
  ltx2::Transformer make() const {
    return ltx2::Transformer(cfg, nn::Weights(weights, at::kFloat, at::kCPU), parallel::Context::single());
  }
};

ltx2::TransformerInput input(const ltx2::TransformerConfig& cfg, int64_t batch, int64_t text, const at::Tensor& mask) {
  ltx2::TransformerInput in;
  in.frames = 2;
  in.height = 2;
  in.width = 3;
  in.hidden_states = at::randn({batch, 12, cfg.in_channels});
  in.audio_hidden_states = at::randn({batch, 5, cfg.audio_in_channels});
  in.encoder_hidden_states = at::randn({batch, text, cfg.caption_channels});
  in.audio_encoder_hidden_states = at::randn({batch, text, cfg.caption_channels});
  in.encoder_mask = mask;
  in.timestep = at::full({batch}, 600.0f);
  return in;
}

// The kept transformer's output on `branch` equals a new transformer's.
void check_fresh(const Tiny& tiny, const ltx2::Transformer& kept, const ltx2::TransformerInput& in, int branch) {
  const auto a = kept.forward(in, nullptr, branch);
  const auto b = tiny.make().forward(in);
  CHECK(at::equal(a.video, b.video));
  CHECK(at::equal(a.audio, b.audio));
}

}  // namespace

TEST_CASE("LTX-2 text keys kept per prompt: repeated steps, a new prompt of the same or another length, an "
          "in-place change, both CFG branches, masked items",
          "[ltx2]") {
  Tiny tiny;
  const ltx2::Transformer kept = tiny.make();
  at::manual_seed(6);
  const auto one = input(tiny.cfg, 1, 4, {});
  check_fresh(tiny, kept, one, 0);
  check_fresh(tiny, kept, one, 0);  // the kept keys
  const auto other = input(tiny.cfg, 1, 4, {});  // same shapes: copied into the kept tensors
  check_fresh(tiny, kept, other, 0);
  check_fresh(tiny, kept, one, 1);  // the other branch's slot
  check_fresh(tiny, kept, other, 0);
  other.encoder_hidden_states.mul_(2);  // in place: a new version of the same tensor
  check_fresh(tiny, kept, other, 0);
  check_fresh(tiny, kept, input(tiny.cfg, 1, 6, {}), 0);  // another length
  // Two items with padded text keys, the second with none visible (its text attention gives 0).
  const at::Tensor mask = at::tensor({1, 1, 1, 0, 0, 0, 0, 0}, at::kLong).view({2, 4});
  const auto masked = input(tiny.cfg, 2, 4, mask);
  check_fresh(tiny, kept, masked, 1);
  check_fresh(tiny, kept, masked, 1);
  // No room to keep them (1000 bytes available): projected in every step, the same outputs.
  ::setenv("DITGEN_TEST_AVAILABLE_BYTES", "1000", 1);
  const auto third = input(tiny.cfg, 1, 8, {});  // longer than the slot's keys: new memory
  check_fresh(tiny, kept, third, 0);
  check_fresh(tiny, kept, third, 0);
  ::unsetenv("DITGEN_TEST_AVAILABLE_BYTES");
}
