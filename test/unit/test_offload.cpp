// --offload (lib/nn/offload.h) without a GPU: the streamer's order, prefetch depth, holds, releases and
// byte counts through a recording host "device"; every model's blocks streamed give the resident results
// bit for bit (transformers with and without DBCache, the text encoders, whole pipelines); and the fit
// check's count of what stays on the device.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>

#include "lib/cache/dbcache.h"
#include "lib/nn/offload.h"
#include "lib/parallel/context.h"
#include "lib/pipeline/fit_check.h"
#include "lib/pipeline/runner.h"
#include "lib/runtime/embedded_configs.h"
#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"
#include "models/flux2/pipeline.h"
#include "models/flux2/transformer.h"
#include "models/llm/decoder.h"
#include "models/ltx2/transformer.h"
#include "models/qwen_image/transformer.h"
#include "models/registry.h"

using namespace ditgen;

namespace {

// What the engine was asked to do, block by block ("start 3", "wait 3", "release 3").
struct EngineLog {
  std::vector<std::string> events;
  std::vector<const void*> hosts;            // host buffers in the order they were made: block ids
  std::map<const void*, int> device_of;      // device buffer -> block
  int live = 0, max_live = 0;                // device buffers at once
  std::string joined() const {
    std::string s;
    for (const auto& e : events) s += (s.empty() ? "" : ", ") + e;
    return s;
  }
};

class RecordingEngine : public nn::HostCopyEngine {
 public:
  explicit RecordingEngine(std::shared_ptr<EngineLog> log) : log_(std::move(log)) {}
  at::Tensor host_buffer(int64_t bytes) override {
    at::Tensor t = HostCopyEngine::host_buffer(bytes);
    log_->hosts.push_back(t.data_ptr());
    return t;
  }
  std::unique_ptr<nn::DeviceCopy> start(const at::Tensor& host) override {
    auto c = HostCopyEngine::start(host);
    const int block = static_cast<int>(std::find(log_->hosts.begin(), log_->hosts.end(), host.data_ptr()) -
                                       log_->hosts.begin());
    CHECK(c->buffer.data_ptr() != host.data_ptr());  // a real copy
    log_->device_of[c->buffer.data_ptr()] = block;
    log_->events.push_back("start " + std::to_string(block));
    log_->max_live = std::max(log_->max_live, ++log_->live);
    return c;
  }
  void wait(nn::DeviceCopy& c) override { log_->events.push_back("wait " + id(c)); }
  void release(std::unique_ptr<nn::DeviceCopy> c) override {
    log_->events.push_back("release " + id(*c));
    --log_->live;
  }

 private:
  std::string id(const nn::DeviceCopy& c) const { return std::to_string(log_->device_of.at(c.buffer.data_ptr())); }
  std::shared_ptr<EngineLog> log_;
};

// Five blocks of three tensors (float, undefined, int64) with distinct values.
std::vector<std::vector<at::Tensor>> toy_blocks(int n = 5) {
  std::vector<std::vector<at::Tensor>> out;
  for (int i = 0; i < n; ++i)
    out.push_back({at::arange(12, at::kFloat).view({3, 4}) + 100 * i, at::Tensor(), at::full({5}, i, at::kLong)});
  return out;
}

std::unique_ptr<nn::BlockStreamer> toy_streamer(std::shared_ptr<EngineLog> log, int depth,
                                                const std::vector<std::vector<at::Tensor>>& blocks) {
  auto s = std::make_unique<nn::BlockStreamer>(std::make_unique<RecordingEngine>(log), depth);
  for (const auto& b : blocks) s->add(b);
  return s;
}

// The events since `from`, joined.
std::string since(const EngineLog& log, size_t& from) {
  std::string s;
  for (size_t i = from; i < log.events.size(); ++i) s += (s.empty() ? "" : ", ") + log.events[i];
  from = log.events.size();
  return s;
}

nlohmann::json tiny(const std::string& model, const std::string& component) {
  return nlohmann::json::parse(embedded_configs().at(model))["tiny"][component];
}

// Counts the bytes of the tensors it hands out that belong to a repeated block (the fit check's grouping).
class BlockBytes : public nn::WrappedSource {
 public:
  using WrappedSource::WrappedSource;
  at::Tensor load(const std::string& key, const std::vector<int64_t>& full_shape, const io::Slice& slice,
                  at::ScalarType dtype, const at::Device& device, nn::Init init) override {
    at::Tensor t = WrappedSource::load(key, full_shape, slice, dtype, device, init);
    if (!pipeline::block_of_key(key).empty() && !pipeline::stays_on_device(key)) bytes += static_cast<int64_t>(t.nbytes());
    return t;
  }
  int64_t bytes = 0;
};

std::shared_ptr<nn::BlockStreamer> host_streamer() { return nn::make_streamer(true, at::kCPU); }

// A block struct as the models write them.
struct Pair {
  nn::Linear l;
  std::optional<at::Tensor> bias;
  at::Tensor norm;
  int64_t heads = 3;  // not a tensor: copied with the struct
  template <class F>
  void tensors(F&& f) {
    nn::each_tensor(f, l, bias, norm);
  }
};

}  // namespace

// ---- the streamer -------------------------------------------------------------------------------

TEST_CASE("offload: blocks are copied in order, depth ahead, cyclically, each released after its use",
          "[offload]") {
  auto log = std::make_shared<EngineLog>();
  const auto blocks = toy_blocks();
  auto s = toy_streamer(log, 2, blocks);
  const nn::OffloadStats& st = s->stats();
  CHECK(st.blocks == 5);
  CHECK(st.host_bytes == 5 * (12 * 4 + 5 * 8));  // the payload, without alignment
  CHECK(log->events.empty());                    // nothing moves before the first use

  size_t at = 0;
  const auto& b0 = s->acquire(0);
  CHECK(since(*log, at) == "start 0, wait 0, start 1, start 2");
  REQUIRE(b0.size() == 3);
  CHECK(at::equal(b0[0], blocks[0][0]));
  CHECK(!b0[1].defined());
  CHECK(b0[2].scalar_type() == at::kLong);
  CHECK(at::equal(b0[2], blocks[0][2]));
  CHECK(s->acquire(0).data() == b0.data());  // the same block again: nothing happens
  CHECK(since(*log, at).empty());

  CHECK(at::equal(s->acquire(1)[0], blocks[1][0]));
  CHECK(since(*log, at) == "release 0, wait 1, start 3");
  s->acquire(2);
  CHECK(since(*log, at) == "release 1, wait 2, start 4");
  s->acquire(3);
  CHECK(since(*log, at) == "release 2, wait 3, start 0");  // the next forward's first block
  CHECK(at::equal(s->acquire(4)[2], blocks[4][2]));
  CHECK(since(*log, at) == "release 3, wait 4, start 1");
  // The next forward finds its first blocks in flight.
  CHECK(at::equal(s->acquire(0)[0], blocks[0][0]));
  CHECK(since(*log, at) == "release 4, wait 0, start 2");
  CHECK(log->max_live == 3);  // the block in use and two ahead

  const nn::OffloadStats& after = s->stats();
  CHECK(after.copies == 8);
  CHECK(after.late == 1);  // only the very first block was not prefetched
  CHECK(after.wasted == 0);
  CHECK(after.bytes_copied == 8 * after.largest_block_bytes);  // equal blocks: 8 buffers moved
  CHECK(after.largest_block_bytes % 256 == 0);

  s->release_all();
  CHECK(log->live == 0);
  s->reset_counts();
  CHECK(s->stats().copies == 0);
  CHECK(s->stats().blocks == 5);  // what it holds stays
}

TEST_CASE("offload: blocks the room allows stay resident, spread through the order, and are never copied",
          "[offload]") {
  auto log = std::make_shared<EngineLog>();
  const auto blocks = toy_blocks(6);
  auto s = std::make_unique<nn::BlockStreamer>(std::make_unique<RecordingEngine>(log), 1);
  // Room for three copy buffers (depth 1: the block in use, one ahead, the one before; 512 bytes each as
  // aligned) and three of the six blocks' 88 bytes: every other block stays.
  const int64_t payload = 12 * 4 + 5 * 8;
  nn::BlockStreamer* raw = s.get();
  s->set_room([raw, payload] { return 3 * 512 + 3 * payload - raw->shared_stats()->resident_bytes; }, 0);
  s->expect(6);
  for (const auto& b : blocks) s->add(b);
  std::string pattern;
  for (int64_t i = 0; i < 6; ++i) pattern += s->resident(i) ? 'R' : 'S';
  CHECK(pattern == "SRSRSR");
  const nn::OffloadStats& st = s->stats();
  CHECK(st.blocks == 3);
  CHECK(st.resident == 3);
  CHECK(st.host_bytes == 3 * payload);
  CHECK(st.resident_bytes == 3 * payload);
  CHECK(log->hosts.size() == 3);  // host buffers only for the streamed blocks

  // Resident blocks are handed out as they are; prefetching passes over them to the next streamed block.
  size_t at = 0;
  CHECK(at::equal(s->acquire(0)[0], blocks[0][0]));
  CHECK(since(*log, at) == "start 0, wait 0, start 1");  // host buffer 1 is block 2's
  const auto& b1 = s->acquire(1);
  CHECK(b1[0].data_ptr() == blocks[1][0].data_ptr());
  CHECK(!b1[1].defined());
  CHECK(since(*log, at) == "release 0");
  CHECK(at::equal(s->acquire(2)[2], blocks[2][2]));
  CHECK(since(*log, at) == "wait 1, start 2");
  s->acquire(3);
  s->acquire(4);
  s->acquire(5);
  CHECK(at::equal(s->acquire(0)[0], blocks[0][0]));
  CHECK(since(*log, at) == "release 1, wait 2, start 0, release 2, wait 0, start 1");
  CHECK(s->stats().bytes_copied == 5 * 512);  // streamed blocks only
  CHECK(s->stats().wasted == 0);
  CHECK_THAT(s->stats().summary(), Catch::StartsWith("3 blocks (264.00 B in host memory), 3 resident (264.00 B), 1 ahead"));

  // Without the room (unknown: < 0) every block streams.
  auto none = std::make_unique<nn::BlockStreamer>(std::make_unique<RecordingEngine>(std::make_shared<EngineLog>()), 1);
  none->set_room([] { return int64_t{-1}; }, 0);
  none->expect(6);
  for (const auto& b : blocks) none->add(b);
  CHECK(none->stats().resident == 0);
  CHECK(none->stats().blocks == 6);
}

TEST_CASE("offload: depth 1 keeps one block in flight", "[offload]") {
  auto log = std::make_shared<EngineLog>();
  auto s = toy_streamer(log, 1, toy_blocks(3));
  size_t at = 0;
  s->acquire(0);
  CHECK(since(*log, at) == "start 0, wait 0, start 1");
  s->acquire(1);
  CHECK(since(*log, at) == "release 0, wait 1, start 2");
  s->acquire(2);
  CHECK(since(*log, at) == "release 1, wait 2, start 0");
  CHECK(log->max_live == 2);
}

TEST_CASE("offload: a jump in the order drops the copies it made useless; a hold prefetches nothing past it",
          "[offload]") {
  // DBCache after Fn = 2 blocks of 5 skipping to the last: without a hold the two copies ahead are wasted.
  auto log = std::make_shared<EngineLog>();
  auto s = toy_streamer(log, 2, toy_blocks());
  size_t at = 0;
  s->acquire(0);
  s->acquire(1);
  CHECK(since(*log, at) == "start 0, wait 0, start 1, start 2, release 0, wait 1, start 3");
  s->acquire(4);
  CHECK(since(*log, at) == "release 1, release 2, release 3, start 4, wait 4, start 0, start 1");
  CHECK(s->stats().wasted == 2);
  CHECK(s->stats().bytes_wasted == 2 * s->stats().largest_block_bytes);
  CHECK(s->stats().late == 2);

  // With a hold at block 2 (the decision point) nothing runs into it: the skip wastes nothing, and a
  // computed step copies block 2 on demand, then prefetches on.
  auto log2 = std::make_shared<EngineLog>();
  auto h = toy_streamer(log2, 2, toy_blocks());
  h->hold(2, true);
  at = 0;
  h->acquire(0);
  h->acquire(1);
  CHECK(since(*log2, at) == "start 0, wait 0, start 1, release 0, wait 1");
  h->acquire(4);  // cached: the middle blocks are skipped
  CHECK(since(*log2, at) == "release 1, start 4, wait 4, start 0, start 1");
  h->acquire(0);
  h->acquire(1);
  h->acquire(2);  // computed
  CHECK(since(*log2, at) == "release 4, wait 0, release 0, wait 1, release 1, start 2, wait 2, start 3, start 4");
  CHECK(h->stats().wasted == 0);
  h->hold(2, false);
  h->acquire(3);
  h->acquire(4);
  h->acquire(0);
  h->acquire(1);
  CHECK(since(*log2, at) ==
        "release 2, wait 3, start 0, release 3, wait 4, start 1, release 4, wait 0, start 2, release 0, wait 1, start 3");
  CHECK(h->stats().wasted == 0);

  // A copy started before a hold was set is kept: the order may still reach it (a first cached forward
  // after uncached ones); it is wasted only if the order jumps past it.
  auto log3 = std::make_shared<EngineLog>();
  auto k = toy_streamer(log3, 2, toy_blocks());
  at = 0;
  k->acquire(4);
  k->hold(1, true);
  k->acquire(0);
  k->acquire(1);
  CHECK(since(*log3, at) == "start 4, wait 4, start 0, start 1, release 4, wait 0, release 0, wait 1, start 2, start 3");
  CHECK(k->stats().wasted == 0);
  CHECK(k->stats().late == 1);
}

TEST_CASE("offload: block lists swap a block struct's tensors, sharing one streamer in order", "[offload]") {
  auto make = [](int i, bool bias) {
    Pair p;
    p.l = nn::Linear(at::full({2, 3}, i, at::kFloat));
    if (bias) p.bias = at::full({2}, 10 + i, at::kFloat);
    p.norm = at::full({3}, 20 + i, at::kDouble);
    return p;
  };
  auto streamer = host_streamer();
  nn::BlockList<Pair> a(streamer);
  a.push_back(make(0, true));
  a.push_back(make(1, false));
  nn::BlockList<Pair> b(streamer);  // after a's blocks in the order
  b.push_back(make(2, true));
  CHECK(streamer->size() == 3);
  CHECK(streamer->stats().host_bytes == 3 * (6 * 4 + 3 * 8) + 2 * 2 * 4);
  CHECK_THROWS_WITH(a.push_back(make(3, true)), Catch::Contains("interleaved"));

  const Pair& p1 = a[1];
  CHECK(at::equal(p1.l.weight, at::full({2, 3}, 1, at::kFloat)));
  CHECK(!p1.l.fp8_weight.defined());
  CHECK(!p1.bias.has_value());
  CHECK(p1.heads == 3);
  const Pair& p2 = b[0];  // the next block of the order, in the other list
  CHECK(at::equal(*p2.bias, at::full({2}, 12, at::kFloat)));
  CHECK(at::equal(p2.norm, at::full({3}, 22, at::kDouble)));
  CHECK(streamer->stats().late == 1);  // a's block 1 was the first asked for; b's came prefetched

  // Without a streamer the list is a plain vector of what was loaded.
  nn::BlockList<Pair> resident;
  Pair r = make(5, true);
  const void* data = r.norm.data_ptr();
  resident.push_back(std::move(r));
  CHECK(resident[0].norm.data_ptr() == data);
  CHECK(!resident.offloaded());
}

// ---- the models ---------------------------------------------------------------------------------

TEST_CASE("offload: FLUX.2's transformer streamed equals the resident one, with and without DBCache",
          "[offload]") {
  auto cfg = flux2::TransformerConfig::from_json(tiny("flux2", "transformer"), "tiny");
  cfg.num_layers = 4;  // enough blocks for DBCache to skip some
  cfg.num_single_layers = 5;
  auto random = std::make_shared<nn::RandomSource>(7);
  flux2::Transformer resident(cfg, nn::Weights(random, at::kFloat, at::kCPU), parallel::Context::single());
  auto counted = std::make_shared<BlockBytes>(random);
  auto streamer = host_streamer();
  flux2::Transformer streamed(cfg, nn::Weights(counted, at::kFloat, at::kCPU), parallel::Context::single(), false,
                              streamer);
  const int64_t n = cfg.num_layers + cfg.num_single_layers;
  CHECK(streamer->stats().blocks == n);
  CHECK(streamer->stats().host_bytes == counted->bytes);  // every tensor of every block is streamed

  at::manual_seed(3);
  flux2::TransformerInput in;
  in.hidden_states = at::randn({1, 12, cfg.in_channels});
  in.encoder_hidden_states = at::randn({1, 5, cfg.joint_attention_dim});
  in.timestep = at::full({1}, 0.7f);
  in.guidance = at::full({1}, 4.0f);
  in.img_ids = flux2::image_ids(3, 4);
  in.txt_ids = flux2::text_ids(5);
  CHECK(at::equal(streamed.forward(in), resident.forward(in)));
  CHECK(streamer->stats().copies == n + 2);  // and the next forward's first two, ahead
  CHECK(at::equal(streamed.forward(in), resident.forward(in)));
  CHECK(streamer->stats().copies == 2 * n + 2);
  CHECK(streamer->stats().late == 1);

  // DBCache: always caching after one computed step, Fn 1, Bn 1: each list runs 2 of its blocks per
  // cached step; the prefetch stops at Fn, so no copy is wasted.
  cache::Options o;
  o.enabled = true;
  o.max_warmup_steps = 1;
  o.residual_diff_threshold = 1.0;
  o.max_continuous_cached_steps = -1;
  o.Fn = 1;
  o.Bn = 1;
  cache::Cache c_res(o, nullptr), c_str(o, nullptr);
  streamer->reset_counts();
  for (int64_t step = 0; step < 3; ++step) {
    c_res.begin_step(step, 3);
    c_str.begin_step(step, 3);
    CHECK(at::equal(streamed.forward(in, &c_str, 0), resident.forward(in, &c_res, 0)));
  }
  const nlohmann::json rep = c_str.report();
  const int64_t calls = rep["block_calls"];
  CHECK(rep["block_calls_skipped"].get<int64_t>() > 0);
  const nn::OffloadStats& st = streamer->stats();
  CHECK(st.wasted == 0);
  // Each block call copied its block once, but blocks 0 and 1 were in flight from before the reset, and the
  // last call prefetched block 0 only (the hold at block 1).
  CHECK(st.copies == calls - 2 + 1);
  // Without the cache the order is plain again (the hold is lifted).
  streamer->reset_counts();
  streamed.forward(in);
  streamed.forward(in);
  CHECK(streamer->stats().wasted == 0);
  CHECK(streamer->stats().late <= 1);
}

TEST_CASE("offload: Qwen-Image's transformer streamed equals the resident one", "[offload]") {
  const auto cfg = qwen_image::TransformerConfig::from_json(tiny("qwen_image", "transformer"), "tiny");
  auto random = std::make_shared<nn::RandomSource>(5);
  qwen_image::Transformer resident(cfg, nn::Weights(random, at::kFloat, at::kCPU), parallel::Context::single());
  auto counted = std::make_shared<BlockBytes>(random);
  auto streamer = host_streamer();
  qwen_image::Transformer streamed(cfg, nn::Weights(counted, at::kFloat, at::kCPU), parallel::Context::single(),
                                   false, streamer);
  CHECK(streamer->stats().blocks == cfg.num_layers);
  CHECK(streamer->stats().host_bytes == counted->bytes);

  at::manual_seed(4);
  qwen_image::TransformerInput in;
  in.hidden_states = at::randn({1, 12, cfg.in_channels});
  in.encoder_hidden_states = at::randn({1, 5, cfg.joint_attention_dim});
  in.encoder_mask = at::tensor({1, 1, 1, 1, 0}, at::kLong).view({1, 5});
  in.timestep = at::full({1}, 0.6f);
  in.frames = 1;
  in.height = 3;
  in.width = 4;
  for (int i = 0; i < 2; ++i) CHECK(at::equal(streamed.forward(in), resident.forward(in)));
  CHECK(streamer->stats().wasted == 0);
}

TEST_CASE("offload: LTX-2's transformer streamed equals the resident one", "[offload]") {
  const auto cfg = ltx2::TransformerConfig::from_json(tiny("ltx2", "transformer"), "tiny");
  auto random = std::make_shared<nn::RandomSource>(9);
  ltx2::Transformer resident(cfg, nn::Weights(random, at::kFloat, at::kCPU), parallel::Context::single());
  auto counted = std::make_shared<BlockBytes>(random);
  auto streamer = host_streamer();
  ltx2::Transformer streamed(cfg, nn::Weights(counted, at::kFloat, at::kCPU), parallel::Context::single(), false,
                             streamer);
  CHECK(streamer->stats().blocks == cfg.num_layers);
  CHECK(streamer->stats().host_bytes == counted->bytes);

  at::manual_seed(5);
  ltx2::TransformerInput in;
  in.frames = 2;
  in.height = 2;
  in.width = 3;
  in.hidden_states = at::randn({1, 12, cfg.in_channels});
  in.audio_hidden_states = at::randn({1, 5, cfg.audio_in_channels});
  in.encoder_hidden_states = at::randn({1, 4, cfg.caption_channels});
  in.audio_encoder_hidden_states = at::randn({1, 4, cfg.caption_channels});
  in.timestep = at::full({1}, 700.0f);
  for (int i = 0; i < 2; ++i) {
    const auto a = streamed.forward(in), b = resident.forward(in);
    CHECK(at::equal(a.video, b.video));
    CHECK(at::equal(a.audio, b.audio));
  }
  CHECK(streamer->stats().copies == 2 * cfg.num_layers + 1);  // two blocks: one ahead at a time
}

TEST_CASE("offload: the text encoders streamed equal the resident ones (Mistral, Qwen2.5-VL, Gemma 3)",
          "[offload]") {
  for (const auto& [model, layers] : std::vector<std::pair<std::string, std::vector<int>>>{
           {"flux2", {1, 2, 3}}, {"qwen_image", {2}}, {"ltx2", {0, 1, 2, 3, 4}}}) {
    CAPTURE(model);
    nlohmann::json j = tiny(model, "text_encoder");
    j["vocab_size"] = 64;
    const auto cfg = llm::DecoderConfig::from_json(j, "tiny " + model);
    auto random = std::make_shared<nn::RandomSource>(11);
    llm::DecoderLM resident(cfg, nn::Weights(random, at::kFloat, at::kCPU));
    auto counted = std::make_shared<BlockBytes>(random);
    auto streamer = host_streamer();
    llm::DecoderLM streamed(cfg, nn::Weights(counted, at::kFloat, at::kCPU), -1, nullptr, streamer);
    CHECK(streamer->stats().blocks == cfg.num_hidden_layers);
    CHECK(streamer->stats().host_bytes == counted->bytes);  // Qwen2's optional q/k/v biases too

    const at::Tensor ids = at::tensor({3, 7, 11, 5, 9, 2}, at::kLong).view({1, 6});
    const at::Tensor mask = at::tensor({0, 1, 1, 1, 1, 1}, at::kLong).view({1, 6});
    for (int i = 0; i < 2; ++i) {  // two prompts: the second finds its first layers in flight
      const auto a = streamed.forward(ids, mask, layers), b = resident.forward(ids, mask, layers);
      REQUIRE(a.size() == b.size());
      for (size_t k = 0; k < a.size(); ++k) CHECK(at::equal(a[k], b[k]));
    }
    CHECK(streamer->stats().late == 1);
  }
}

TEST_CASE("offload: every model's pipeline with --offload gives the resident latents, and reports per step",
          "[offload]") {
  for (const auto& entry : registered_models()) {
    CAPTURE(entry.command);
    pipeline::GenerateRequest req;
    req.steps = 2;
    req.height = 64;
    req.width = 64;
    if (entry.command == "ltx2") req.num_frames = 9;
    auto ctx = parallel::Context::single();
    std::vector<pipeline::Latents> results;
    nlohmann::json report;
    int forwards = 1;
    for (const bool offload : {false, true}) {
      req.offload = offload;
      auto model = entry.load(req, at::kCPU, at::kFloat, ctx);
      const pipeline::Settings s = pipeline::resolve_settings(req, *model, at::kCPU, at::kFloat);
      forwards = model->cfg_off_reason(s).empty() ? 2 : 1;
      const pipeline::Branches b = pipeline::encode_branches(*model, s, *ctx);
      model->release(pipeline::Component::TextEncoder);  // the memory plan: the encoder's streamer goes
      model->load_deferred();
      results.push_back(pipeline::denoise(*model, s, b, model->initial_latents(s), *ctx).latents);
      report = model->offload_report();
      CHECK(report.is_null() == !offload);
      if (offload) {
        INFO(model->offload_summary());
        CHECK(model->offload_summary().rfind("offload transformer: ", 0) == 0);
      }
    }
    REQUIRE(results[0].size() == results[1].size());
    // Resident, Qwen-Image makes its blocks' modulation vectors for the whole schedule with one GEMM per block; its
    // streamed blocks make them per forward (GEMVs), which BLAS may round differently in the last bit (which depends
    // on the CPU's kernels): equal up to that there, bit for bit elsewhere.
    const bool table = entry.command == "qwen-image";
    for (size_t k = 0; k < results[0].size(); ++k) {
      INFO("max |diff| " << (results[0][k] - results[1][k]).abs().max().item<double>() << " of "
                         << results[0][k].abs().max().item<double>());
      if (table)
        CHECK(at::allclose(results[0][k], results[1][k], 1e-5, 1e-5));
      else
        CHECK(at::equal(results[0][k], results[1][k]));
    }

    const nlohmann::json& t = report["transformer"];
    const int64_t blocks = t["blocks"];
    CHECK(t["steps"] == 2);
    // Every forward copies every block once; the last prefetches the first (two) of a next one.
    CHECK(t["copies"] == 2 * forwards * blocks + std::min<int64_t>(2, blocks - 1));
    CHECK(t["late_copies"] == 1);
    CHECK(t["wasted_copies"] == 0);
    CHECK(t["bytes_copied_per_step"] == t["bytes_copied"].get<int64_t>() / 2);
    const nlohmann::json& te = report["text_encoder"];
    CHECK(te["blocks"].get<int64_t>() > 0);
    CHECK(te["copies"].get<int64_t>() >= te["blocks"].get<int64_t>());
    CHECK(te["wasted_copies"] == 0);
  }
}

// ---- the fit check ------------------------------------------------------------------------------

TEST_CASE("offload: block keys are grouped by block", "[offload]") {
  CHECK(pipeline::block_of_key("transformer_blocks.3.attn.to_q.weight") == "transformer_blocks.3.");
  CHECK(pipeline::block_of_key("single_transformer_blocks.12.attn.to_out.weight") == "single_transformer_blocks.12.");
  CHECK(pipeline::block_of_key("language_model.model.layers.7.mlp.up_proj.weight") ==
        "language_model.model.layers.7.");
  CHECK(pipeline::block_of_key("model.layers.0.input_layernorm.weight") == "model.layers.0.");
  CHECK(pipeline::block_of_key("x_embedder.weight").empty());
  CHECK(pipeline::block_of_key("transformer_blocks.weight").empty());
  CHECK(pipeline::block_of_key("norm_out.layers.x.weight").empty());
  CHECK(pipeline::block_of_key("mytransformer_blocks.3.w").empty());
}

TEST_CASE("offload: the fit check counts the blocks in host memory and only the ones in flight on the device",
          "[offload]") {
  namespace fs = std::filesystem;
  const std::string dir = fs::temp_directory_path() / ("ditgen_offload_fit_" + std::to_string(getpid()));
  fs::remove_all(dir);
  flux2::export_tiny(dir, 2, false);
  const pipeline::WeightEstimate plain = pipeline::estimate_weights(dir, 1, 1, at::kFloat);
  const pipeline::WeightEstimate off = pipeline::estimate_weights(dir, 1, 1, at::kFloat, false, 2);
  CHECK(plain.host_bytes.empty());
  CHECK(plain.host_total == 0);
  // The tiny FLUX.2's transformer as loaded: all its blocks' bytes, and one double block's (its largest).
  const auto cfg = flux2::TransformerConfig::from_json(tiny("flux2", "transformer"), "tiny");
  auto bytes_of = [&](int64_t doubles, int64_t singles) {
    flux2::TransformerConfig c = cfg;
    c.num_layers = doubles;
    c.num_single_layers = singles;
    auto counted = std::make_shared<BlockBytes>(std::make_shared<nn::RandomSource>(0));
    flux2::Transformer t(c, nn::Weights(counted, at::kFloat, at::kCPU), parallel::Context::single());
    return counted->bytes;
  };
  const int64_t blocks = bytes_of(cfg.num_layers, cfg.num_single_layers), double_block = bytes_of(1, 0);
  CHECK(double_block > bytes_of(0, 1));
  CHECK(off.host_bytes.at("transformer") == blocks);
  CHECK(off.bytes.at("transformer") ==
        plain.bytes.at("transformer") - blocks + nn::BlockStreamer::device_buffers(2) * double_block);
  CHECK(off.host_bytes.count("text_encoder") == 1);
  CHECK(off.host_bytes.count("vae") == 0);
  CHECK(off.bytes.at("vae") == plain.bytes.at("vae"));
  // The memory plan: the text encoder's and the transformer's blocks are never in host memory together.
  CHECK(off.host_total == std::max(off.host_bytes.at("transformer"), off.host_bytes.at("text_encoder")));
  // TP splits both.
  const pipeline::WeightEstimate tp2 = pipeline::estimate_weights(dir, 2, 1, at::kFloat, false, 2);
  CHECK(tp2.host_bytes.at("transformer") == blocks / 2);

  // Too little host memory for the blocks: refused with the numbers, before the device's check.
  ::setenv("DITGEN_TEST_AVAILABLE_BYTES", "1000", 1);
  std::string msg;
  try {
    pipeline::check_weights_fit(off, pipeline::available_room(at::kCPU), 2);
  } catch (const Error& e) {
    msg = e.what();
  }
  ::unsetenv("DITGEN_TEST_AVAILABLE_BYTES");
  CHECK_THAT(msg, Catch::Contains("--offload keeps the streamed blocks in host memory") &&
                      Catch::Contains("for the 2 ranks on this host") && Catch::Contains("available"));
  fs::remove_all(dir);
}

TEST_CASE("offload: refused where there is no GPU, with the reason", "[offload]") {
  const std::string why = nn::offload_unavailable_reason(at::kCPU);
  CHECK_THAT(why, Catch::Contains("--offload streams the model's blocks from host memory to the GPU"));
  CHECK_THAT(why, Catch::Contains("drop --offload"));
}

// ---- on a GPU (CUDA builds: `ditgen_tests "[cuda]"`) -------------------------------------------------

#ifdef DITGEN_CUDA
TEST_CASE("offload (CUDA): blocks stream on a copy stream bit for bit, with at most depth + 2 buffers on the GPU",
          "[cuda][offload]") {
  if (!at::hasCUDA()) FAIL("this CUDA build's offload tests need a GPU");
  const at::Device dev(at::kCUDA, 0);
  const int64_t n = 16, side = 4096;  // 16 blocks of 32 MiB (bf16)
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(dev);
  at::manual_seed(2);
  std::vector<at::Tensor> resident;
  auto streamer = std::make_shared<nn::BlockStreamer>(dev, 2);
  for (int64_t i = 0; i < n; ++i) {
    resident.push_back(at::randn({side, side}, bf16) / 64);
    streamer->add({resident.back(), at::full({side}, static_cast<double>(i), bf16)});
  }
  const at::Tensor x0 = at::randn({1024, side}, bf16);
  auto run = [&](auto&& block) {
    at::Tensor x = x0;
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t i = 0; i < n; ++i) {
        const auto [w, b] = block(i);
        for (int k = 0; k < 4; ++k) x = at::tanh(at::addmm(b, x, w));  // some compute per block
      }
    return x;
  };
  const at::Tensor ref = run([&](int64_t i) {
    return std::make_pair(resident[i], at::full({side}, static_cast<double>(i), bf16));
  });
  resident.clear();
  runtime::synchronize(dev);
  runtime::return_freed_memory(dev);
  runtime::reset_peaks(dev);
  const int64_t before = runtime::read_memory(dev).device_allocated_peak;
  const at::Tensor got = run([&](int64_t i) {
    const auto& t = streamer->acquire(i);
    return std::make_pair(t[0], t[1]);
  });
  streamer->release_all();
  runtime::synchronize(dev);
  CHECK(at::equal(got, ref));
  const nn::OffloadStats& st = streamer->stats();
  const int64_t peak = runtime::read_memory(dev).device_allocated_peak - before;
  INFO(st.summary());
  // The buffers in flight and in use (never all 16 blocks), plus the activations (x, addmm, tanh).
  CHECK(peak <= nn::BlockStreamer::device_buffers(2) * st.largest_block_bytes + 4 * static_cast<int64_t>(x0.nbytes()));
  CHECK(st.copies == 2 * n + 2);
  CHECK(st.wasted == 0);
  CHECK(st.copy_seconds > 0);
  CHECK(st.hidden_fraction() >= 0);
  WARN("offload on this GPU: " << st.summary());
}

TEST_CASE("offload (CUDA): FLUX.2's transformer streamed equals the resident one in bf16", "[cuda][offload]") {
  if (!at::hasCUDA()) FAIL("this CUDA build's offload tests need a GPU");
  const at::Device dev(at::kCUDA, 0);
  auto cfg = flux2::TransformerConfig::from_json(tiny("flux2", "transformer"), "tiny");
  cfg.num_single_layers = 6;
  auto random = std::make_shared<nn::RandomSource>(7);
  flux2::Transformer resident(cfg, nn::Weights(random, at::kBFloat16, dev), parallel::Context::single());
  auto streamer = nn::make_streamer(true, dev);
  flux2::Transformer streamed(cfg, nn::Weights(random, at::kBFloat16, dev), parallel::Context::single(), false,
                              streamer);
  at::manual_seed(3);
  flux2::TransformerInput in;
  in.hidden_states = at::randn({1, 64, cfg.in_channels}).to(dev, at::kBFloat16);
  in.encoder_hidden_states = at::randn({1, 16, cfg.joint_attention_dim}).to(dev, at::kBFloat16);
  in.timestep = at::full({1}, 0.7f);
  in.guidance = at::full({1}, 4.0f);
  in.img_ids = flux2::image_ids(8, 8);
  in.txt_ids = flux2::text_ids(16);
  for (int i = 0; i < 3; ++i) CHECK(at::equal(streamed.forward(in), resident.forward(in)));
  CHECK(streamer->stats().wasted == 0);
  CHECK(streamer->stats().late == 1);
}
#endif
