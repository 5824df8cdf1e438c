// The block streamer of --offload (lib/nn/offload.h) without a GPU: order, prefetch depth, holds, releases
// and byte counts through a recording host "device"; block lists swapping a block struct's tensors.
#include <catch2/catch.hpp>

#include <map>

#include "lib/nn/offload.h"
#include "lib/runtime/error.h"

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

TEST_CASE("offload: refused where there is no GPU, with the reason", "[offload]") {
  const std::string why = nn::offload_unavailable_reason(at::kCPU);
  CHECK_THAT(why, Catch::Contains("--offload streams the model's blocks from host memory to the GPU"));
  CHECK_THAT(why, Catch::Contains("drop --offload"));
}
