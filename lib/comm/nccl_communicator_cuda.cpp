#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <mpi.h>
#include <nccl.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <thread>

#include "lib/comm/mpi_communicator.h"
#include "lib/comm/nccl_communicator.h"
#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"

namespace ditgen::comm {

namespace {

// NCCL's description of `r`, with its last error message where the library keeps one.
std::string nccl_error(ncclResult_t r, ncclComm_t comm) {
  std::string s = ncclGetErrorString(r);
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
  const char* last = ncclGetLastError(comm);
  if (last && *last) s += std::string(" (") + last + ")";
#else
  (void)comm;
#endif
  return s;
}

// "ncclSend" of "ncclSend(buf, n, ...)": the call NCCL_CHECK names.
std::string call_name(const char* expr) {
  const std::string s = expr;
  return s.substr(0, s.find('('));
}

// `what` is "op on group NAME {ranks}"; the log line adds "[rank r/w]".
#define NCCL_CHECK(cmd, what)                                                                                \
  do {                                                                                                       \
    ncclResult_t r_ = (cmd);                                                                                 \
    if (r_ != ncclSuccess) fail("[nccl] {}: {} failed: {}", what, call_name(#cmd), nccl_error(r_, nullptr)); \
  } while (0)

ncclDataType_t nccl_type(at::ScalarType t, const std::string& what) {
  switch (t) {
    case at::kFloat: return ncclFloat32;
    case at::kHalf: return ncclFloat16;
    case at::kBFloat16: return ncclBfloat16;
    case at::kDouble: return ncclFloat64;
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    case at::kByte: return ncclUint8;
    case at::kChar: return ncclInt8;
    default: fail("[nccl] {}: unsupported tensor type {}", what, c10::toString(t));
  }
}

// One process-wide watchdog thread. It watches three things: host calls into NCCL that have not
// returned (the first collective on a communicator connects to its peers and blocks there), device
// work whose completion event has not fired, and each communicator's asynchronous error (a peer or
// network failure that NCCL reports only there). A deadline passed or an error ends this rank with a
// message naming the operation or group; mpirun then ends the other ranks.
class Watchdog {
 public:
  static Watchdog& get() {
    static Watchdog* w = new Watchdog();  // never destroyed: its detached thread outlives static destruction
    return *w;
  }

  // Marks a host call in progress until the returned guard is destroyed.
  class HostCall {
   public:
    HostCall(Watchdog& w, std::list<std::pair<std::string, double>>::iterator it) : w_(w), it_(it) {}
    ~HostCall() {
      std::lock_guard<std::mutex> lock(w_.mu_);
      w_.host_.erase(it_);
    }

   private:
    Watchdog& w_;
    std::list<std::pair<std::string, double>>::iterator it_;
  };
  std::unique_ptr<HostCall> host_call(const std::string& what, double timeout_s) {
    std::lock_guard<std::mutex> lock(mu_);
    timeout_ = timeout_s;
    host_.emplace_back(what, runtime::now_seconds() + timeout_s);
    return std::make_unique<HostCall>(*this, std::prev(host_.end()));
  }
  void watch(std::shared_ptr<at::cuda::CUDAEvent> ev, std::string what, double timeout_s) {
    std::lock_guard<std::mutex> lock(mu_);
    timeout_ = timeout_s;
    pending_.push_back({std::move(ev), std::move(what), runtime::now_seconds() + timeout_s});
  }
  // Polls `comm`'s asynchronous error until forget() (before the communicator is destroyed).
  void add_comm(ncclComm_t comm, std::string label) {
    std::lock_guard<std::mutex> lock(mu_);
    comms_.emplace_back(comm, std::move(label));
  }
  void forget(ncclComm_t comm) {
    std::lock_guard<std::mutex> lock(mu_);
    comms_.remove_if([comm](const auto& c) { return c.first == comm; });
  }

 private:
  struct Item {
    std::shared_ptr<at::cuda::CUDAEvent> ev;
    std::string what;
    double deadline;
  };
  Watchdog() : thread_([this] { loop(); }) { thread_.detach(); }
  [[noreturn]] static void end_rank(const std::string& msg) {
    spdlog::error(msg);
    std::_Exit(4);  // not MPI_Abort: MPI is single-threaded here and the main thread may be inside NCCL
  }
  [[noreturn]] void expire(const std::string& what) {
    end_rank(fmt::format("[nccl] {} timed out after {:.0f} s: a peer rank is stuck or gone (--comm-timeout)",
                         what, timeout_));
  }
  void loop() {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      std::lock_guard<std::mutex> lock(mu_);
      const double now = runtime::now_seconds();
      for (const auto& [what, deadline] : host_)
        if (now > deadline) expire(what);
      for (const auto& [comm, label] : comms_) {
        ncclResult_t async = ncclSuccess;
        const ncclResult_t r = ncclCommGetAsyncError(comm, &async);
        if (r != ncclSuccess)
          end_rank(
              fmt::format("[nccl] group {}: ncclCommGetAsyncError failed: {}", label, nccl_error(r, comm)));
        if (async != ncclSuccess && async != ncclInProgress)
          end_rank(fmt::format("[nccl] group {}: asynchronous error: {}", label, nccl_error(async, comm)));
      }
      try {
        while (!pending_.empty() && pending_.front().ev->query()) pending_.pop_front();
      } catch (const std::exception& e) {  // a device error, reported by the event of the op it hit first
        end_rank(fmt::format("[nccl] {} failed on the device: {}", pending_.front().what, e.what()));
      }
      if (!pending_.empty() && now > pending_.front().deadline) expire(pending_.front().what);
    }
  }
  std::mutex mu_;
  std::list<std::pair<std::string, double>> host_;
  std::list<std::pair<ncclComm_t, std::string>> comms_;
  std::deque<Item> pending_;
  double timeout_ = 0;
  std::thread thread_;
};

class NcclWork : public Work {
 public:
  NcclWork(std::shared_ptr<at::cuda::CUDAEvent> ev, std::vector<at::Tensor> keep) : ev_(std::move(ev)), keep_(std::move(keep)) {}
  void wait() override {
    ev_->block(c10::cuda::getCurrentCUDAStream());
    keep_.clear();
  }

 private:
  std::shared_ptr<at::cuda::CUDAEvent> ev_;
  std::vector<at::Tensor> keep_;
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(MPI_Comm mpi, std::string name, double timeout)
      : group_(mpi, std::move(name), timeout), timeout_(timeout) {
    rank_ = group_.rank();
    size_ = group_.size();
    device_ = c10::cuda::current_device();
    const std::string init = what("creating the communicator");
    ncclUniqueId id;
    std::memset(&id, 0, sizeof(id));
    if (rank_ == 0) NCCL_CHECK(ncclGetUniqueId(&id), init);
    auto guard = Watchdog::get().host_call(init, timeout_);
    mpi_check(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, group_.comm()), "MPI_Bcast", init);
    NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_), init);
    Watchdog::get().add_comm(comm_, this->name());
    stream_ = std::make_unique<c10::cuda::CUDAStream>(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device_));
  }
  ~NcclCommunicator() override {
    if (!comm_) return;
    Watchdog::get().forget(comm_);
    // Destroying waits for the communicator's work: bounded like any operation. After an
    // asynchronous error that work never ends, so the communicator is aborted instead.
    auto guard = Watchdog::get().host_call(what("destroying the communicator"), timeout_);
    ncclResult_t async = ncclSuccess;
    const bool broken = ncclCommGetAsyncError(comm_, &async) != ncclSuccess || async != ncclSuccess;
    const ncclResult_t r = broken ? ncclCommAbort(comm_) : ncclCommDestroy(comm_);
    if (r != ncclSuccess)
      spdlog::warn("[nccl] {}: {} failed: {}", what("destroying the communicator"),
                   broken ? "ncclCommAbort" : "ncclCommDestroy", nccl_error(r, nullptr));
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  std::string name() const override { return group_.label(); }

  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override {
    return std::make_shared<NcclCommunicator>(group_.split(color, key, name), name, timeout_);
  }

  void all_reduce(at::Tensor& t, ReduceOp op) override {
    if (!t.is_cuda()) {  // small host values (reports, flags): through the device and back
      at::Tensor d = t.to(at::Device(at::kCUDA, device_));
      all_reduce(d, op);
      t.copy_(d.cpu());
      return;
    }
    at::Tensor buf = t.is_contiguous() ? t : t.contiguous();
    const ncclDataType_t type = nccl_type(buf.scalar_type(), what("all_reduce"));
    auto guard = begin("all_reduce");
    const ncclRedOp_t rop = op == ReduceOp::Sum ? ncclSum : op == ReduceOp::Avg ? ncclAvg : ncclMax;
    NCCL_CHECK(ncclAllReduce(buf.data_ptr(), buf.data_ptr(), buf.numel(), type, rop, comm_, stream()),
               what("all_reduce"));
    end_and_wait(what("all_reduce"));
    if (!buf.is_same(t)) t.copy_(buf);
  }

  at::Tensor all_gather(const at::Tensor& t, int64_t dim, const std::vector<int64_t>& sizes) override {
    if (!t.is_cuda()) return all_gather(t.to(at::Device(at::kCUDA, device_)), dim, sizes).cpu();
    DITGEN_CHECK(static_cast<int>(sizes.size()) == size_, "internal: {} got {} sizes for {} ranks",
                 what("all_gather"), sizes.size(), size_);
    DITGEN_CHECK(t.size(dim) == sizes[rank_], "internal: {}: this rank holds {} rows but sizes say {}",
                 what("all_gather"), t.size(dim), sizes[rank_]);
    at::Tensor src = t.movedim(dim, 0).contiguous();
    int64_t total = 0;
    bool even = true;
    for (auto s : sizes) {
      DITGEN_CHECK(s >= 0, "internal: {}: a rank holds {} rows", what("all_gather"), s);
      total += s;
      even = even && s == sizes[0];
    }
    auto shape = src.sizes().vec();
    shape[0] = total;
    at::Tensor out = at::empty(shape, src.options());
    int64_t inner = 1;
    for (size_t d = 1; d < shape.size(); ++d) inner *= shape[d];
    auto guard = begin("all_gather");
    if (even) {
      NCCL_CHECK(ncclAllGather(src.data_ptr(), out.data_ptr(), src.numel(),
                               nccl_type(src.scalar_type(), what("all_gather")), comm_, stream()),
                 what("all_gather"));
    } else {
      // Uneven chunks: every rank sends its chunk to every peer.
      NCCL_CHECK(ncclGroupStart(), what("all_gather"));
      int64_t off = 0;
      const size_t esz = src.element_size();
      for (int r = 0; r < size_; ++r) {
        char* dst = static_cast<char*>(out.data_ptr()) + off * inner * esz;
        if (sizes[r] > 0) {
          NCCL_CHECK(ncclRecv(dst, sizes[r] * inner * esz, ncclUint8, r, comm_, stream()), what("all_gather"));
        }
        if (src.numel() > 0) {
          NCCL_CHECK(ncclSend(src.data_ptr(), src.numel() * esz, ncclUint8, r, comm_, stream()), what("all_gather"));
        }
        off += sizes[r];
      }
      NCCL_CHECK(ncclGroupEnd(), what("all_gather"));
    }
    end_and_wait(what("all_gather"));
    return out.movedim(0, dim).contiguous();
  }

  std::vector<at::Tensor> all_to_all(const std::vector<at::Tensor>& send,
                                     const std::vector<std::vector<int64_t>>& recv_shapes) override {
    DITGEN_CHECK(static_cast<int>(send.size()) == size_ && static_cast<int>(recv_shapes.size()) == size_,
                 "internal: {} needs one tensor and one receive shape per rank, got {} and {}",
                 what("all_to_all"), send.size(), recv_shapes.size());
    std::vector<at::Tensor> sendc, out;
    for (const auto& s : send) {
      DITGEN_CHECK(s.scalar_type() == send[0].scalar_type() && s.device() == send[0].device(),
                   "internal: {}: tensors of types {} and {}", what("all_to_all"), send[0].toString(),
                   s.toString());
      sendc.push_back(s.contiguous());
    }
    for (const auto& shape : recv_shapes) out.push_back(at::empty(shape, sendc[0].options()));
    auto guard = begin("all_to_all");
    NCCL_CHECK(ncclGroupStart(), what("all_to_all"));
    for (int r = 0; r < size_; ++r) {
      const size_t sb = sendc[r].numel() * sendc[r].element_size();
      const size_t rb = out[r].numel() * out[r].element_size();
      if (sb) NCCL_CHECK(ncclSend(sendc[r].data_ptr(), sb, ncclUint8, r, comm_, stream()), what("all_to_all"));
      if (rb) NCCL_CHECK(ncclRecv(out[r].data_ptr(), rb, ncclUint8, r, comm_, stream()), what("all_to_all"));
    }
    NCCL_CHECK(ncclGroupEnd(), what("all_to_all"));
    end_and_wait(what("all_to_all"));
    return out;
  }

  std::unique_ptr<Work> send_recv(const at::Tensor& send, int dst, at::Tensor& recv, int src) override {
    DITGEN_CHECK(src >= 0 && src < size_ && dst >= 0 && dst < size_,
                 "internal: {}: ranks {} and {} are not both in the group", what("send_recv"), dst, src);
    DITGEN_CHECK(
        recv.is_contiguous() && recv.is_cuda() && send.is_cuda() && recv.scalar_type() == send.scalar_type(),
        "internal: {} needs GPU tensors of one type and a contiguous receive buffer", what("send_recv"));
    at::Tensor s = send.contiguous();
    auto guard = begin("send_recv");
    NCCL_CHECK(ncclGroupStart(), what("send_recv"));
    NCCL_CHECK(ncclSend(s.data_ptr(), s.numel() * s.element_size(), ncclUint8, dst, comm_, stream()), what("send_recv"));
    NCCL_CHECK(ncclRecv(recv.data_ptr(), recv.numel() * recv.element_size(), ncclUint8, src, comm_, stream()),
               what("send_recv"));
    NCCL_CHECK(ncclGroupEnd(), what("send_recv"));
    auto ev = record(what("send_recv"));
    return std::make_unique<NcclWork>(ev, std::vector<at::Tensor>{s, recv});
  }

  void broadcast(at::Tensor& t, int root) override {
    if (!t.is_cuda()) {
      at::Tensor d = t.to(at::Device(at::kCUDA, device_));
      broadcast(d, root);
      t.copy_(d.cpu());
      return;
    }
    DITGEN_CHECK(root >= 0 && root < size_, "internal: {}: root {} is not a rank of the group",
                 what("broadcast"), root);
    DITGEN_CHECK(t.is_contiguous(), "internal: {} needs a contiguous tensor", what("broadcast"));
    auto guard = begin("broadcast");
    NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel() * t.element_size(), ncclUint8, root, comm_, stream()),
               what("broadcast"));
    end_and_wait(what("broadcast"));
  }

  void barrier() override {
    at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(at::kCUDA, device_));
    all_reduce(one, ReduceOp::Sum);
    c10::cuda::getCurrentCUDAStream().synchronize();
  }

 private:
  cudaStream_t stream() const { return stream_->stream(); }
  std::string what(const char* op) const {
    return fmt::format("{} on group {}", op, name());  // the log line adds "[rank r/w]"
  }
  // The communicator stream waits for the compute stream's pending work (inputs are ready); the
  // returned guard lets the watchdog see the host call until the operation is enqueued.
  std::unique_ptr<Watchdog::HostCall> begin(const char* op) {
    auto guard = Watchdog::get().host_call(what(op), timeout_);
    at::cuda::CUDAEvent ready;
    ready.record(c10::cuda::getCurrentCUDAStream());
    ready.block(*stream_);
    return guard;
  }
  std::shared_ptr<at::cuda::CUDAEvent> record(const std::string& what) {
    auto done = std::make_shared<at::cuda::CUDAEvent>();
    done->record(*stream_);
    Watchdog::get().watch(done, what, timeout_);
    return done;
  }
  // The compute stream waits for the operation (no host synchronisation).
  void end_and_wait(const std::string& what) { record(what)->block(c10::cuda::getCurrentCUDAStream()); }

  MpiGroup group_;
  double timeout_;
  int rank_ = 0, size_ = 1;
  c10::DeviceIndex device_ = 0;
  ncclComm_t comm_ = nullptr;
  std::unique_ptr<c10::cuda::CUDAStream> stream_;
};

}  // namespace

std::shared_ptr<Communicator> make_nccl_world(double timeout_s) {
  int rank = 0, gpus = 0;
  mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &rank), "MPI_Comm_rank", "creating the NCCL world");
  gpus = static_cast<int>(c10::cuda::device_count());
  DITGEN_CHECK(gpus > 0, "[nccl] no GPU visible to rank {}", rank);
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(rank % gpus));
  return std::make_shared<NcclCommunicator>(MPI_COMM_WORLD, "world", timeout_s);
}

}  // namespace ditgen::comm
