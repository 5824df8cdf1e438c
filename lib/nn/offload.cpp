#include "lib/nn/offload.h"

#include <algorithm>
#include <deque>

#ifdef DITGEN_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

#include "lib/io/report.h"
#include "lib/runtime/error.h"

namespace ditgen::nn {

namespace {

// Tensors start at multiples of this in a block's buffer (any dtype's alignment, and the GEMMs' 16 bytes).
constexpr int64_t kAlign = 256;
int64_t aligned(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// A tensor's bytes as a flat uint8 tensor on its device (contiguous).
at::Tensor flat_bytes(const at::Tensor& t) { return t.contiguous().reshape({-1}).view(at::kByte); }

}  // namespace

std::string offload_unavailable_reason(const at::Device& device) {
#ifdef DITGEN_CUDA
  if (!device.is_cuda())
    return "--offload streams the model's blocks from host memory to the GPU: it needs --device cuda (on the CPU "
           "the weights are in host memory already); drop --offload here";
  return "";
#else
  (void)device;
  return "--offload streams the model's blocks from host memory to the GPU: it needs the CUDA build of ditgen (this "
         "build is CPU-only, and its weights are in host memory already); drop --offload here";
#endif
}

void check_block_order(bool ok) {
  DITGEN_CHECK(ok, "internal: blocks of two lists were added to one block streamer interleaved");
}

// ---- stats --------------------------------------------------------------------------------------

void OffloadStats::reset_counts() {
  steps = copies = bytes_copied = late = wasted = bytes_wasted = 0;
  copy_seconds = wait_seconds = 0;
}

double OffloadStats::hidden_fraction() const {
  if (copy_seconds <= 0) return 1.0;
  return std::clamp(1.0 - wait_seconds / copy_seconds, 0.0, 1.0);
}

nlohmann::json OffloadStats::to_json() const {
  nlohmann::json j = {{"blocks", blocks},
                      {"resident_blocks", resident},
                      {"resident_bytes", resident_bytes},
                      {"depth", depth},
                      {"host_bytes", host_bytes},
                      {"largest_block_bytes", largest_block_bytes},
                      {"device_buffers", BlockStreamer::device_buffers(depth)},
                      {"copies", copies},
                      {"bytes_copied", bytes_copied},
                      {"late_copies", late},
                      {"wasted_copies", wasted},
                      {"bytes_wasted", bytes_wasted},
                      {"copy_s", copy_seconds},
                      {"wait_s", wait_seconds},
                      {"hidden_fraction", hidden_fraction()}};
  if (steps > 0) {
    j["steps"] = steps;
    j["bytes_copied_per_step"] = bytes_copied / steps;
    j["copy_s_per_step"] = copy_seconds / static_cast<double>(steps);
    j["wait_s_per_step"] = wait_seconds / static_cast<double>(steps);
  }
  if (copy_seconds > 0) j["copy_gb_per_s"] = static_cast<double>(bytes_copied) / copy_seconds / 1e9;
  return j;
}

std::string OffloadStats::summary() const {
  std::string s = fmt::format("{} blocks ({} in host memory), ", blocks, io::human_bytes(host_bytes));
  if (resident > 0) s += fmt::format("{} resident ({}), ", resident, io::human_bytes(resident_bytes));
  s += fmt::format("{} ahead; ", depth);
  const double per = steps > 0 ? static_cast<double>(steps) : 1.0;
  s += fmt::format("{} copied{}", io::human_bytes(static_cast<int64_t>(static_cast<double>(bytes_copied) / per)),
                   steps > 0 ? " per step" : "");
  if (copy_seconds > 0)
    s += fmt::format(", {:.3f} s of copies{} of which {:.0f}% hidden behind compute (waited {:.3f} s)",
                     copy_seconds / per, steps > 0 ? " a step," : ",", 100 * hidden_fraction(), wait_seconds / per);
  if (late > 0) s += fmt::format(", {} copied on demand", late);
  if (wasted > 0) s += fmt::format(", {} copies unused ({})", wasted, io::human_bytes(bytes_wasted));
  return s;
}

// ---- engines ------------------------------------------------------------------------------------

at::Tensor HostCopyEngine::host_buffer(int64_t bytes) { return at::empty({bytes}, at::kByte); }

std::unique_ptr<DeviceCopy> HostCopyEngine::start(const at::Tensor& host) {
  auto c = std::make_unique<DeviceCopy>();
  c->buffer = host.clone();
  return c;
}

#ifdef DITGEN_CUDA
namespace {

using Event = std::shared_ptr<at::cuda::CUDAEvent>;
Event timing_event() { return std::make_shared<at::cuda::CUDAEvent>(cudaEventDefault); }

struct CudaCopy : DeviceCopy {
  Event ready;       // recorded on the copy stream after the copy
  bool used = false;  // waited for: the compute stream may read it
};

// Copies on a stream of their own into buffers allocated on that stream; pinned host buffers of exactly
// the block's size (cudaHostAlloc: the caching host allocator would round each up to a power of two).
class CudaCopyEngine : public CopyEngine {
 public:
  CudaCopyEngine(const at::Device& device, int max_buffers)
      : device_(device),
        copy_(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index())),
        max_buffers_(max_buffers) {}

  ~CudaCopyEngine() override {
    // Host buffers may be freed right after: no copy may still read them.
    try {
      copy_.synchronize();
    } catch (...) {
    }
  }

  at::Tensor host_buffer(int64_t bytes) override {
    c10::cuda::CUDAGuard guard(device_.index());  // pinned for this device's context (portable to others)
    void* p = nullptr;
    if (bytes > 0) C10_CUDA_CHECK(cudaHostAlloc(&p, static_cast<size_t>(bytes), cudaHostAllocPortable));
    return at::from_blob(p, {bytes}, [](void* q) { if (q) (void)cudaFreeHost(q); }, at::TensorOptions().dtype(at::kByte));
  }

  std::unique_ptr<DeviceCopy> start(const at::Tensor& host) override {
    reclaim(max_buffers_ - 1);
    c10::cuda::CUDAStreamGuard guard(copy_);  // the buffer belongs to the copy stream
    auto c = std::make_unique<CudaCopy>();
    const int64_t bytes = host.numel();
    c->buffer = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).device(device_));
    Event begin = timing_event();
    c->ready = timing_event();
    begin->record(copy_);
    if (bytes > 0)
      C10_CUDA_CHECK(cudaMemcpyAsync(c->buffer.data_ptr(), host.data_ptr(), static_cast<size_t>(bytes),
                                     cudaMemcpyHostToDevice, copy_.stream()));
    c->ready->record(copy_);
    copies_.push_back({begin, c->ready});
    ++live_;
    return c;
  }

  void wait(DeviceCopy& d) override {
    auto& c = static_cast<CudaCopy&>(d);
    const c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(device_.index());
    if (!c.ready->query()) {  // not there yet: the compute stream waits, and the wait is timed
      Event before = timing_event(), after = timing_event();
      before->record(compute);
      c.ready->block(compute);
      after->record(compute);
      waits_.push_back({before, after});
    }
    c.buffer.record_stream(compute);
    c.used = true;
  }

  void release(std::unique_ptr<DeviceCopy> d) override {
    auto* c = static_cast<CudaCopy*>(d.get());
    const bool used = c->used;
    d.reset();  // the allocator frees the buffer after the compute stream's queued kernels
    if (!used) {  // only the copy stream ever touched it: reusable in that stream's order
      --live_;
      return;
    }
    auto freed = std::make_shared<at::cuda::CUDAEvent>();
    freed->record(c10::cuda::getCurrentCUDAStream(device_.index()));
    freed_.push_back(freed);
  }

  void collect_times(OffloadStats& s, bool all) override {
    auto take = [&](std::deque<std::pair<Event, Event>>& q, double& sum) {
      while (!q.empty() && (all || q.front().second->query())) {
        q.front().second->synchronize();
        sum += q.front().first->elapsed_time(*q.front().second) / 1000.0;
        q.pop_front();
      }
    };
    take(copies_, s.copy_seconds);
    take(waits_, s.wait_seconds);
  }

 private:
  // Until at most `n` buffers are live: the oldest releases confirmed (the host waits for the device).
  void reclaim(int n) {
    while (!freed_.empty() && freed_.front()->query()) {
      freed_.pop_front();
      --live_;
    }
    while (live_ > n && !freed_.empty()) {
      freed_.front()->synchronize();
      freed_.pop_front();
      --live_;
    }
  }

  at::Device device_;
  c10::cuda::CUDAStream copy_;
  int max_buffers_;
  int live_ = 0;  // device buffers not known to be free
  std::deque<std::shared_ptr<at::cuda::CUDAEvent>> freed_;
  std::deque<std::pair<Event, Event>> copies_, waits_;
};

}  // namespace
#endif

std::unique_ptr<CopyEngine> make_copy_engine(const at::Device& device, int max_buffers) {
#ifdef DITGEN_CUDA
  if (device.is_cuda()) return std::make_unique<CudaCopyEngine>(device, max_buffers);
#endif
  (void)max_buffers;
  return std::make_unique<HostCopyEngine>();
}

std::shared_ptr<BlockStreamer> make_streamer(bool on, const at::Device& device, int depth) {
  return on ? std::make_shared<BlockStreamer>(device, depth) : nullptr;
}

// ---- the streamer -------------------------------------------------------------------------------

BlockStreamer::BlockStreamer(const at::Device& device, int depth)
    : BlockStreamer(make_copy_engine(device, device_buffers(depth)), depth) {}

BlockStreamer::BlockStreamer(std::unique_ptr<CopyEngine> engine, int depth)
    : engine_(std::move(engine)), depth_(depth), stats_(std::make_shared<OffloadStats>()) {
  DITGEN_CHECK(depth_ >= 1, "internal: a block streamer copies at least one block ahead (depth {})", depth_);
  stats_->depth = depth_;
}

BlockStreamer::~BlockStreamer() {
  try {
    release_all();
    engine_->collect_times(*stats_, /*all=*/true);
  } catch (...) {  // a failing device at exit: the error that got us here is the one to report
  }
}

void BlockStreamer::set_room(std::function<int64_t()> room, int64_t reserve) {
  room_ = std::move(room);
  reserve_ = reserve;
}

bool BlockStreamer::stays_resident(int64_t bytes, int64_t buffer_bytes) {
  if (!room_) return false;
  const int64_t room = room_();
  if (room < 0) return false;
  // What may stay: the room less the reserve and the copy buffers of the streamed blocks.
  const int64_t buffers = device_buffers(depth_) * std::max(stats_->largest_block_bytes, buffer_bytes);
  const double spare = static_cast<double>(room - reserve_ - buffers);
  if (spare < static_cast<double>(bytes)) return false;
  // This block's share: the spare room over the bytes of the blocks still to come (this one's size each).
  const int64_t remaining = std::max<int64_t>(expected_ - size(), 1);
  credit_ += std::min(1.0, spare / (static_cast<double>(remaining) * static_cast<double>(bytes))) * bytes;
  if (credit_ < 0.999 * static_cast<double>(bytes)) return false;
  credit_ -= static_cast<double>(bytes);
  return true;
}

std::vector<at::Tensor> BlockStreamer::add(const std::vector<at::Tensor>& tensors) {
  Block b;
  int64_t cursor = 0, payload = 0;
  for (const auto& t : tensors) {
    Slot s;
    if (t.defined()) {
      s.defined = true;
      s.offset = aligned(cursor);
      s.bytes = static_cast<int64_t>(t.nbytes());
      s.dtype = t.scalar_type();
      s.sizes = t.sizes().vec();
      cursor = s.offset + s.bytes;
      payload += s.bytes;
    }
    b.slots.push_back(std::move(s));
  }
  const int64_t total = std::max(aligned(cursor), kAlign);  // never empty
  if (stays_resident(payload, total)) {
    b.resident = true;
    for (const auto& t : tensors) {
      // A slice of a larger tensor (a TP shard of a whole load) would keep all of it: keep a compact copy.
      const bool compact = !t.defined() || (t.is_contiguous() && t.storage().nbytes() == t.nbytes());
      b.device.push_back(compact ? t : t.clone(at::MemoryFormat::Contiguous));
    }
    blocks_.push_back(std::move(b));
    ++stats_->resident;
    stats_->resident_bytes += payload;
    return blocks_.back().device;
  }
  b.host = engine_->host_buffer(total);
  std::vector<at::Tensor> views;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const Slot& s = b.slots[k];
    if (!s.defined) {
      views.emplace_back();
      continue;
    }
    at::Tensor dst = b.host.narrow(0, s.offset, s.bytes);
    dst.copy_(flat_bytes(tensors[k]));  // device to host: synchronous
    views.push_back(dst.view(s.dtype).view(s.sizes));
  }
  blocks_.push_back(std::move(b));
  ++stats_->blocks;
  stats_->host_bytes += payload;
  stats_->largest_block_bytes = std::max(stats_->largest_block_bytes, total);
  return views;
}

// The `depth` streamed blocks after i in the cyclic order (resident ones are passed over), stopping before
// a hold when `stop_at_holds`.
std::vector<int64_t> BlockStreamer::ahead_of(int64_t i, bool stop_at_holds) const {
  std::vector<int64_t> out;
  const int64_t n = size();
  for (int64_t k = (i + 1) % n; k != i && static_cast<int>(out.size()) < depth_; k = (k + 1) % n) {
    if (stop_at_holds && holds_.count(k)) break;
    if (!blocks_[static_cast<size_t>(k)].resident) out.push_back(k);
  }
  return out;
}

void BlockStreamer::start(int64_t i, bool late) {
  Block& b = blocks_[static_cast<size_t>(i)];
  b.copy = engine_->start(b.host);
  in_flight_.push_back(i);
  ++stats_->copies;
  stats_->bytes_copied += b.host.numel();
  if (late) ++stats_->late;
}

void BlockStreamer::drop(int64_t i) {
  Block& b = blocks_[static_cast<size_t>(i)];
  if (b.resident) return;
  b.device.clear();
  if (b.copy) engine_->release(std::move(b.copy));
  b.copy.reset();
  in_flight_.erase(std::remove(in_flight_.begin(), in_flight_.end(), i), in_flight_.end());
}

const std::vector<at::Tensor>& BlockStreamer::acquire(int64_t i) {
  DITGEN_CHECK(i >= 0 && i < size(), "internal: block {} of a streamer holding {}", i, size());
  Block& b = blocks_[static_cast<size_t>(i)];
  if (i == current_) return b.device;
  // The block before is done on the host (its kernels are queued): its device memory goes.
  view_.reset();
  if (current_ >= 0) drop(current_);
  current_ = -1;
  // Copies in flight that the new position makes useless (a jump in the order) go before any new one; one
  // that is merely past a hold (started before it was set) may still be used.
  const std::vector<int64_t> ahead = ahead_of(i), next = ahead_of(i, /*stop_at_holds=*/false);
  for (const int64_t j : std::vector<int64_t>(in_flight_)) {
    if (j == i || std::count(next.begin(), next.end(), j)) continue;
    ++stats_->wasted;
    stats_->bytes_wasted += blocks_[static_cast<size_t>(j)].host.numel();
    drop(j);
  }
  if (!b.resident) {
    if (!b.copy) start(i, /*late=*/true);
    in_flight_.erase(std::remove(in_flight_.begin(), in_flight_.end(), i), in_flight_.end());
    engine_->wait(*b.copy);
    b.device.clear();
    for (const Slot& s : b.slots)
      b.device.push_back(s.defined ? b.copy->buffer.narrow(0, s.offset, s.bytes).view(s.dtype).view(s.sizes)
                                   : at::Tensor());
  }
  current_ = i;
  for (const int64_t j : ahead)
    if (!blocks_[static_cast<size_t>(j)].copy) start(j, /*late=*/false);
  engine_->collect_times(*stats_, /*all=*/false);
  return b.device;
}

void BlockStreamer::hold(int64_t i, bool on) {
  if (on)
    holds_.insert(i);
  else
    holds_.erase(i);
}

void BlockStreamer::release_all() {
  view_.reset();
  for (int64_t i = 0; i < size(); ++i) drop(i);
  current_ = -1;
}

const OffloadStats& BlockStreamer::stats() {
  engine_->collect_times(*stats_, /*all=*/true);
  return *stats_;
}

void BlockStreamer::reset_counts() {
  engine_->collect_times(*stats_, /*all=*/true);
  stats_->reset_counts();
}

}  // namespace ditgen::nn
