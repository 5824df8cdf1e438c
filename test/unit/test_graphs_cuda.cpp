// nn::BlockGraphs on the GPU (CUDA builds; `ditgen_tests "[cuda]"`): a replayed graph computes what the
// eager blocks compute from each call's own inputs, and shapes get graphs of their own. Blocks that cannot
// be captured end with an error (`ditgen_tests "[cuda_alone]"`, in a process of its own: a failed capture
// leaves LibTorch's CUDA generator in its capture state).
#ifdef DITGEN_CUDA
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include <nlohmann/json.hpp>

#include "lib/nn/graphs.h"
#include "lib/nn/weights.h"
#include "lib/parallel/context.h"
#include "lib/runtime/embedded_configs.h"
#include "lib/runtime/error.h"
#include "lib/pipeline/model.h"
#include "models/ltx2/transformer.h"
#include "models/qwen_image/transformer.h"

using namespace ditgen;

namespace {

void require_gpu() {
  if (!at::hasCUDA()) FAIL("this CUDA build's graph tests need a GPU");
}

// A stand-in for a list of blocks: x is replaced, y (undefined on entry) is an output only, t a table read.
struct Blocks {
  at::Tensor w, table;
  void operator()(at::Tensor& x, at::Tensor& y) const {
    for (int i = 0; i < 3; ++i) x = at::gelu(at::matmul(x, w)) + table;
    y = x.sum(1);
  }
};

}  // namespace

TEST_CASE("a replayed block graph computes what the eager blocks compute, from each call's inputs", "[cuda]") {
  require_gpu();
  const auto f = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  Blocks b{at::randn({64, 64}, f) / 8, at::randn({64}, f)};
  nn::BlockGraphs graphs;
  for (int call = 0; call < 5; ++call) {
    const at::Tensor input = at::randn({16, 64}, f);
    at::Tensor ex = input.clone(), ey;
    b(ex, ey);  // eager reference
    at::Tensor x = input.clone(), y;
    graphs.run(true, {&x, &y}, {b.table}, [&] { b(x, y); });
    CHECK(graphs.captured() == (call == 0 ? 0 : 1));  // eager first, captured on the second call
    REQUIRE(y.defined());
    CHECK(at::equal(x, ex));
    CHECK(at::equal(y, ey));
  }
  // The table is read where it lies: changed in place, the replay sees the new values.
  b.table.add_(1);
  const at::Tensor input = at::randn({16, 64}, f);
  at::Tensor ex = input.clone(), ey, x = input.clone(), y;
  b(ex, ey);
  graphs.run(true, {&x, &y}, {b.table}, [&] { b(x, y); });
  CHECK(graphs.captured() == 1);
  CHECK(at::equal(x, ex));
  // The returned tensors are the caller's: the next replay does not overwrite them.
  const at::Tensor kept = x.clone();
  at::Tensor x2 = at::randn({16, 64}, f), y2;
  graphs.run(true, {&x2, &y2}, {b.table}, [&] { b(x2, y2); });
  CHECK(at::equal(x, kept));
}

TEST_CASE("block graphs: a shape of its own gets its own graph; ineligible or switched-off runs stay eager",
          "[cuda]") {
  require_gpu();
  const auto f = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  const Blocks b{at::randn({64, 64}, f) / 8, at::randn({64}, f)};
  nn::BlockGraphs graphs;
  auto once = [&](int64_t rows, bool eligible) {
    const at::Tensor input = at::randn({rows, 64}, f);
    at::Tensor ex = input.clone(), ey, x = input.clone(), y;
    b(ex, ey);
    graphs.run(eligible, {&x, &y}, {b.table}, [&] { b(x, y); });
    CHECK(at::equal(x, ex));
  };
  for (int64_t rows : {8, 8, 24, 24, 8}) once(rows, true);
  CHECK(graphs.captured() == 2);
  for (int64_t rows : {40, 40, 40}) once(rows, false);
  CHECK(graphs.captured() == 2);
  nn::set_cuda_graphs(false);
  for (int64_t rows : {56, 56, 56}) once(rows, true);
  nn::set_cuda_graphs(true);
  CHECK(graphs.captured() == 2);
  // More shapes than it keeps: the older graphs go (their memory pool with them), results stay right.
  for (int64_t rows : {72, 72, 88, 88, 104, 104, 120, 120}) once(rows, true);
  CHECK(graphs.captured() <= 4);
}

TEST_CASE("LTX-2 with kept text keys: a new prompt of the same length replays the step's graph", "[cuda]") {
  require_gpu();
  const auto cfg = ltx2::TransformerConfig::from_json(
      nlohmann::json::parse(embedded_configs().at("ltx2"))["tiny"]["transformer"], "tiny");
  const auto weights = std::make_shared<nn::RandomSource>(23);
  const auto make = [&] {
    return ltx2::Transformer(cfg, nn::Weights(weights, at::kFloat, at::kCUDA), parallel::Context::single());
  };
  const ltx2::Transformer kept = make();
  at::manual_seed(8);
  const auto f = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  auto prompt = [&] {
    ltx2::TransformerInput in;
    in.frames = 2;
    in.height = 2;
    in.width = 3;
    in.hidden_states = at::randn({1, 12, cfg.in_channels}, f);
    in.audio_hidden_states = at::randn({1, 5, cfg.audio_in_channels}, f);
    in.encoder_hidden_states = at::randn({1, 4, cfg.caption_channels}, f);
    in.audio_encoder_hidden_states = at::randn({1, 4, cfg.caption_channels}, f);
    in.timestep = at::full({1}, 600.0f, f);
    return in;
  };
  const auto one = prompt(), other = prompt();
  for (int i = 0; i < 3; ++i) kept.forward(one);  // eager, captured, replayed
  CHECK(kept.graphs_captured() == 1);
  // The prompt's first forward projects its keys into the slot: the same graph, which reads them there.
  for (const auto* in : {&other, &other, &one}) {
    const auto a = kept.forward(*in), b = make().forward(*in);
    CHECK(at::allclose(a.video, b.video, 1e-5, 1e-5));
    CHECK(at::allclose(a.audio, b.audio, 1e-5, 1e-5));
  }
  CHECK(kept.graphs_captured() == 1);
}

TEST_CASE("LTX-2's audio stream beside the video's (nn::SideStream): eager, captured and replayed forwards equal "
          "the CPU's",
          "[cuda]") {
  require_gpu();
  const auto cfg = ltx2::TransformerConfig::from_json(
      nlohmann::json::parse(embedded_configs().at("ltx2"))["tiny"]["transformer"], "tiny");
  const auto weights = std::make_shared<nn::RandomSource>(31);
  const ltx2::Transformer gpu(cfg, nn::Weights(weights, at::kFloat, at::kCUDA), parallel::Context::single());
  const ltx2::Transformer cpu(cfg, nn::Weights(weights, at::kFloat, at::kCPU), parallel::Context::single());
  at::manual_seed(10);
  ltx2::TransformerInput in;
  in.frames = 2;
  in.height = 2;
  in.width = 3;
  in.hidden_states = at::randn({2, 12, cfg.in_channels});
  in.audio_hidden_states = at::randn({2, 5, cfg.audio_in_channels});
  in.encoder_hidden_states = at::randn({2, 4, cfg.caption_channels});
  in.audio_encoder_hidden_states = at::randn({2, 4, cfg.caption_channels});
  in.timestep = at::full({2}, 600.0f);
  ltx2::TransformerInput on_gpu = in;
  for (at::Tensor* t : {&on_gpu.hidden_states, &on_gpu.audio_hidden_states, &on_gpu.encoder_hidden_states,
                        &on_gpu.audio_encoder_hidden_states, &on_gpu.timestep})
    *t = t->cuda();
  const auto want = cpu.forward(in);
  for (int i = 0; i < 4; ++i) {  // eager, captured, replayed twice
    const auto got = gpu.forward(on_gpu);
    CHECK(at::allclose(got.video.cpu(), want.video, 1e-4, 1e-5));
    CHECK(at::allclose(got.audio.cpu(), want.audio, 1e-4, 1e-5));
  }
  CHECK(gpu.graphs_captured() == 1);
}

TEST_CASE("Qwen-Image with its modulation table: each step's replay reads that step's row", "[cuda]") {
  require_gpu();
  const auto cfg = qwen_image::TransformerConfig::from_json(
      nlohmann::json::parse(embedded_configs().at("qwen_image"))["tiny"]["transformer"], "tiny");
  const auto weights = std::make_shared<nn::RandomSource>(29);
  const auto make = [&] {
    return qwen_image::Transformer(cfg, nn::Weights(weights, at::kFloat, at::kCUDA), parallel::Context::single());
  };
  const qwen_image::Transformer kept = make(), plain = make();
  at::manual_seed(9);
  const auto f = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  const std::vector<float> schedule{1000.f, 800.f, 600.f, 400.f, 200.f};
  qwen_image::TransformerInput in;
  in.hidden_states = at::randn({1, 12, cfg.in_channels}, f);
  in.encoder_hidden_states = at::randn({1, 5, cfg.joint_attention_dim}, f);
  in.height = 3;
  in.width = 4;
  for (float t : schedule) {  // eager, captured, then replayed with the later steps' rows
    in.timestep = pipeline::model_timestep(t, 1, at::kFloat, at::kCUDA);
    in.schedule = &schedule;
    in.t = t;
    const at::Tensor a = kept.forward(in);
    in.schedule = nullptr;
    CHECK(at::allclose(a, plain.forward(in), 1e-5, 1e-5));
  }
  CHECK(kept.graphs_captured() == 1);
}

TEST_CASE("blocks that cannot be captured (a host read inside) end with an error naming --cuda-graphs off",
          "[cuda_alone]") {
  require_gpu();
  const auto f = at::TensorOptions().device(at::kCUDA).dtype(at::kFloat);
  const at::Tensor w = at::randn({32, 32}, f) / 6;
  auto blocks = [&](at::Tensor& x) {
    x = at::matmul(x, w);
    if (x.abs().max().item<float>() > 1e6f) x = x / 2;  // a host decision: a synchronisation
  };
  nn::BlockGraphs graphs;
  const at::Tensor input = at::randn({4, 32}, f);
  at::Tensor ex = input.clone(), x = input.clone();
  blocks(ex);
  graphs.run(true, {&x}, {}, [&] { blocks(x); });  // eager
  CHECK(at::equal(x, ex));
  x = input.clone();
  CHECK_THROWS_WITH(graphs.run(true, {&x}, {}, [&] { blocks(x); }), Catch::Contains("--cuda-graphs off"));
  CHECK(graphs.captured() == 0);
}

#endif
