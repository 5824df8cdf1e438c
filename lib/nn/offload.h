#pragma once
// --offload (DESIGN §11: a residency policy on the blocks, not a model change): a model's repeated blocks
// (the transformer's, the text encoder's layers) live in host memory, one buffer per block (pinned on
// CUDA), and are copied to the device on a copy stream `depth` blocks ahead of their use, so that block i
// computes while blocks i+1 .. i+depth arrive. The rest of the model (embedders, final layers) stays on
// the device.
//
//   nn::BlockList<Block> blocks(streamer);   // null streamer: blocks stay where they were loaded
//   blocks.push_back(load_block(i));         // offloaded: its tensors move to host memory now
//   const Block& b = blocks[i];              // offloaded: the device copy (the block before is released)
//
// A block type lists its tensors once, for the list to swap them between host and device:
//
//   struct Block {
//     nn::Linear q, k; at::Tensor norm;  Attention attn;  // nested structs list theirs the same way
//     template <class F> void tensors(F&& f) { nn::each_tensor(f, q, k, norm, attn); }
//   };
//
// Order and prefetch: blocks run in the order they were added, cyclically (after the last block of a
// forward comes the first of the next forward, or of the next prompt's encoding), so the copies of a
// block list's first blocks overlap the end of the call before. A jump in that order (DBCache skipping
// the middle blocks, a text encoder run to fewer layers) drops the copies in flight that it made useless
// (counted as wasted); `BlockList::may_skip_from(Fn)` stops prefetching at DBCache's decision point, so
// that a cached step wastes nothing (the first block after the decision is then copied on demand).
//
// Residency (set_room, CUDA runs): blocks whose bytes the device can spare stay on it for good and are
// never copied. While blocks are added, each one stays resident if the device's room (less a reserve for
// the step's activations and the copy buffers) covers it and its share of the blocks still expected
// (expect): resident blocks are spread evenly through the order, so the copies of the streamed ones
// overlap the compute of the resident ones in between.
//
// Streams and memory (CUDA): a device copy is allocated on the copy stream and marked as used by the
// compute stream (record_stream), so dropping it hands its memory back to the caching allocator only once
// the compute stream has run the block's kernels. The host never runs more than two blocks ahead of the
// device: at most depth + 2 block buffers exist on the device at once (the block in use, the depth ahead,
// and the one before, possibly still computing), which is what the fit check counts. Everything else of
// the mechanism is device-generic: on a host "device" (HostCopyEngine) the same code runs synchronously,
// which is how the unit tests check order, depth, release and byte counts without a GPU.
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "lib/nn/linear.h"

namespace ditgen::nn {

// Whether --offload can run on `device` ("" if it can, else why not, naming what to change).
std::string offload_unavailable_reason(const at::Device& device);

// What a streamer holds and did. Counts start at the last reset_counts(): the runner resets the
// transformer's at the start of every run, so a report holds its last (timed) run.
struct OffloadStats {
  int64_t blocks = 0;               // blocks kept in host memory
  int64_t resident = 0;             // blocks kept on the device (the room allowed), never copied
  int64_t resident_bytes = 0;       // their bytes
  int depth = 0;                    // blocks copied ahead of the one in use
  int64_t host_bytes = 0;           // their tensors' bytes (pinned host memory on CUDA)
  int64_t largest_block_bytes = 0;  // one block's copy on the device
  int64_t steps = 0;                // denoising steps run (the transformer's; 0 for a text encoder)
  int64_t copies = 0, bytes_copied = 0;  // host-to-device copies started
  int64_t late = 0;                      // of them, started only when their block was needed
  int64_t wasted = 0, bytes_wasted = 0;  // started, then dropped unused (the order changed)
  double copy_seconds = 0;  // device time of the copies (CUDA events; 0 where not measured)
  double wait_seconds = 0;  // time the compute stream stood waiting for a copy (CUDA events)

  void reset_counts();
  // The share of the copy time hidden behind compute: 1 - wait / copy (1 when nothing was copied).
  double hidden_fraction() const;
  nlohmann::json to_json() const;
  // "40 blocks (41.2 GiB in host memory), 16 resident (16.0 GiB), 2 ahead; 41.2 GiB copied per step, 1.2 s of
  // copies a step, of which 63% hidden behind compute (waited 0.44 s)"
  std::string summary() const;
};

// A block's copy on the device: in flight, then in use.
struct DeviceCopy {
  virtual ~DeviceCopy() = default;
  at::Tensor buffer;  // [bytes] uint8 on the device
};

// How block buffers move between host memory and the compute device.
class CopyEngine {
 public:
  virtual ~CopyEngine() = default;
  // Host memory for one block of `bytes` bytes, [bytes] uint8 (pinned on CUDA, so that copies are async).
  virtual at::Tensor host_buffer(int64_t bytes) = 0;
  // Starts copying `host` (a host_buffer) into a new device buffer (on CUDA: on the copy stream, in order).
  virtual std::unique_ptr<DeviceCopy> start(const at::Tensor& host) = 0;
  // The compute stream waits until `c` has arrived (on the device, not the host); from here on the compute
  // stream may use its buffer.
  virtual void wait(DeviceCopy& c) = 0;
  // The host is done with `c`: every kernel that reads it is queued (or it was never waited for). Its
  // memory returns once the compute stream has run them.
  virtual void release(std::unique_ptr<DeviceCopy> c) = 0;
  // Adds the device times of finished copies and waits to `s`; `all`: waits for the pending ones first.
  virtual void collect_times(OffloadStats& s, bool all) { (void)s, (void)all; }
};

// The host as the "device" (the CPU; the unit tests): plain host buffers, each copy a synchronous clone.
class HostCopyEngine : public CopyEngine {
 public:
  at::Tensor host_buffer(int64_t bytes) override;
  std::unique_ptr<DeviceCopy> start(const at::Tensor& host) override;
  void wait(DeviceCopy&) override {}
  void release(std::unique_ptr<DeviceCopy>) override {}
};

// The engine for `device`: CUDA (a copy stream, pinned host buffers, events) or HostCopyEngine.
// `max_buffers`: device buffers that may exist at once (CUDA; the host waits for the oldest release).
std::unique_ptr<CopyEngine> make_copy_engine(const at::Device& device, int max_buffers);

class BlockStreamer {
 public:
  // Blocks copied ahead of the one in use.
  static constexpr int kDefaultDepth = 2;
  // The device bytes kept free next to resident blocks at the least (a step's activations, a VAE decode).
  static constexpr int64_t kDefaultReserve = int64_t{6} << 30;
  // Block buffers on the device at most: the one in use, `depth` ahead, the one before (still computing).
  static int device_buffers(int depth) { return depth + 2; }

  explicit BlockStreamer(const at::Device& device, int depth = kDefaultDepth);
  BlockStreamer(std::unique_ptr<CopyEngine> engine, int depth = kDefaultDepth);
  ~BlockStreamer();
  BlockStreamer(const BlockStreamer&) = delete;
  BlockStreamer& operator=(const BlockStreamer&) = delete;

  // Takes a block's tensors (on any device; undefined ones stay undefined) into one host buffer and
  // returns views of it in the same order; the caller drops the originals. Blocks run in this order.
  // With a room (set_room) and the room to spare, the block stays where its tensors are (resident) and
  // they come back as they are (a compact copy of a view of a larger tensor).
  std::vector<at::Tensor> add(const std::vector<at::Tensor>& tensors);
  // Lets blocks stay on the device: `room()` is what the device can still take (bytes; < 0: unknown, none
  // stays), of which `reserve` bytes (the step's activations, the rest of the stage) are kept free next
  // to the copy buffers.
  void set_room(std::function<int64_t()> room, int64_t reserve);
  // `n` more blocks will be added (their count spreads the resident ones through the order).
  void expect(int64_t n) { expected_ += n; }
  bool resident(int64_t i) const { return blocks_[static_cast<size_t>(i)].resident; }
  int64_t size() const { return static_cast<int64_t>(blocks_.size()); }

  // Block i's tensors on the device, in `add`'s order, usable by the compute stream. Releases the block
  // acquired before; starts the copies of the next `depth` blocks in the order (not past a hold).
  const std::vector<at::Tensor>& acquire(int64_t i);
  // Keeps `view` (a block struct made of acquire(i)'s tensors) alive until the next acquire.
  template <class T>
  const T& keep(std::shared_ptr<T> view) {
    view_ = view;
    return *view;
  }
  // Prefetching does not run into block i (on: the caller decides only later whether it runs).
  void hold(int64_t i, bool on);
  // Drops every device copy (in flight or in use); the next acquire copies on demand.
  void release_all();

  // The counters, with every finished copy's time added (waits for pending copies: call between steps).
  const OffloadStats& stats();
  std::shared_ptr<OffloadStats> shared_stats() const { return stats_; }
  void reset_counts();

 private:
  struct Slot {  // one tensor of a block
    bool defined = false;
    int64_t offset = 0, bytes = 0;
    at::ScalarType dtype = at::kByte;
    std::vector<int64_t> sizes;
  };
  struct Block {
    bool resident = false;  // on the device for good (device holds its tensors; no host copy)
    at::Tensor host;  // [bytes] uint8
    std::vector<Slot> slots;
    std::unique_ptr<DeviceCopy> copy;  // in flight or in use
    std::vector<at::Tensor> device;    // views of copy->buffer once waited for
  };
  std::vector<int64_t> ahead_of(int64_t i, bool stop_at_holds = true) const;
  // Whether a block of `bytes` (a copy buffer of `buffer_bytes`) stays on the device.
  bool stays_resident(int64_t bytes, int64_t buffer_bytes);
  void start(int64_t i, bool late);
  void drop(int64_t i);

  std::unique_ptr<CopyEngine> engine_;
  int depth_;
  std::vector<Block> blocks_;
  std::set<int64_t> holds_;
  std::vector<int64_t> in_flight_;  // started, not yet acquired, in start order
  int64_t current_ = -1;            // acquired last
  std::shared_ptr<void> view_;
  std::shared_ptr<OffloadStats> stats_;
  std::function<int64_t()> room_;  // null: every block streams
  int64_t reserve_ = 0;
  int64_t expected_ = 0;
  double credit_ = 0;  // the resident share accrued but not yet given to a block (bytes)
};

// Calls f(at::Tensor&) for every tensor of each argument: tensors, optional tensors, nn::Linear (its
// model-dtype weight and its FP8 form) and any struct with a `tensors(f)` member.
namespace detail {
template <class F>
void visit(F& f, at::Tensor& t) {
  f(t);
}
template <class F>
void visit(F& f, std::optional<at::Tensor>& t) {
  if (t) f(*t);
}
template <class F>
void visit(F& f, Linear& l) {
  f(l.weight);
  f(l.fp8_weight);
  f(l.fp8_scale);
}
template <class F, class T>
auto visit(F& f, T& x) -> decltype(x.tensors(f), void()) {
  x.tensors(f);
}
}  // namespace detail

template <class F, class... T>
void each_tensor(F& f, T&... xs) {
  (detail::visit(f, xs), ...);
}

// Fails when blocks of two lists sharing a streamer are added interleaved (an internal error).
void check_block_order(bool ok);

// A model's list of repeated blocks: on the device as loaded, or (with a streamer) in host memory and
// handed out as device copies. Several lists may share one streamer (FLUX.2's double- then single-stream
// blocks: one order, prefetched across the boundary); each must be filled before the next starts.
template <class Block>
class BlockList {
 public:
  BlockList() = default;
  explicit BlockList(std::shared_ptr<BlockStreamer> streamer)
      : streamer_(std::move(streamer)), base_(streamer_ ? streamer_->size() : 0) {}

  // `n` blocks will be added (with a streamer: spreads the resident ones through the order).
  void reserve(int64_t n) {
    blocks_.reserve(static_cast<size_t>(n));
    if (streamer_) streamer_->expect(n);
  }

  void push_back(Block b) {
    if (streamer_) {
      check_block_order(streamer_->size() == base_ + size());
      std::vector<at::Tensor> tensors;
      auto take = [&](at::Tensor& t) { tensors.push_back(t); };
      b.tensors(take);
      const std::vector<at::Tensor> host = streamer_->add(tensors);
      tensors.clear();
      size_t k = 0;
      auto put = [&](at::Tensor& t) { t = host[k++]; };
      b.tensors(put);
    }
    blocks_.push_back(std::move(b));
  }

  // Block i, ready for the compute stream. Offloaded: valid until the next block of any list sharing the
  // streamer is asked for.
  const Block& operator[](int64_t i) const {
    if (!streamer_) return blocks_[static_cast<size_t>(i)];
    const std::vector<at::Tensor>& device = streamer_->acquire(base_ + i);
    auto view = std::make_shared<Block>(blocks_[static_cast<size_t>(i)]);
    size_t k = 0;
    auto put = [&](at::Tensor& t) { t = device[k++]; };
    view->tensors(put);
    return streamer_->keep(std::move(view));
  }
  int64_t size() const { return static_cast<int64_t>(blocks_.size()); }
  bool offloaded() const { return streamer_ != nullptr; }

  // DBCache: whether blocks `first` .. of this list run is decided only after block first - 1 (Fn), so no
  // copy of them starts before; -1: every block runs in order.
  void may_skip_from(int64_t first) const {
    if (!streamer_) return;
    if (hold_ >= 0) streamer_->hold(hold_, false);
    hold_ = first >= 0 && first < size() ? base_ + first : -1;
    if (hold_ >= 0) streamer_->hold(hold_, true);
  }

 private:
  std::vector<Block> blocks_;  // as loaded, or with their host views
  std::shared_ptr<BlockStreamer> streamer_;
  int64_t base_ = 0;  // blocks_[0]'s place in the streamer's order
  mutable int64_t hold_ = -1;
};

// A streamer for `device` when `on` (--offload), else null (the blocks stay where they load).
std::shared_ptr<BlockStreamer> make_streamer(bool on, const at::Device& device, int depth = BlockStreamer::kDefaultDepth);

}  // namespace ditgen::nn
