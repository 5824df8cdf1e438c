#include "lib/dist/mpi_communicator.h"

#include <time.h>

#include <climits>
#include <cstring>

#include "lib/runtime/error.h"
#include "lib/runtime/log.h"
#include "lib/runtime/metrics.h"

namespace ditgen::dist {

void mpi_wait(std::vector<MPI_Request>& reqs, double timeout_s, const std::string& what) {
  if (reqs.empty()) return;
  const double deadline = runtime::now_seconds() + timeout_s;
  int polls = 0;
  for (;;) {
    int done = 0;
    MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE);
    if (done) return;
    if (++polls > 64) {
      timespec ts{0, 50000};  // 50 us
      nanosleep(&ts, nullptr);
      if (runtime::now_seconds() > deadline) {
        fail("[mpi] {} timed out after {:.0f} s: a peer rank is stuck or gone (--comm-timeout)", what, timeout_s);
      }
    }
  }
}

MpiGroup::MpiGroup(MPI_Comm comm, std::string name, double timeout_s)
    : comm_(comm), name_(std::move(name)), timeout_(timeout_s) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  members_.resize(static_cast<size_t>(size_));
  std::vector<MPI_Request> req(1);
  MPI_Iallgather(&world_rank, 1, MPI_INT, members_.data(), 1, MPI_INT, comm_, &req[0]);
  mpi_wait(req, timeout_, "creating group " + name_);
}

MpiGroup::~MpiGroup() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

std::string MpiGroup::label() const {
  std::string s = name_ + " {";
  for (int i = 0; i < size_; ++i) s += (i ? "," : "") + std::to_string(members_[static_cast<size_t>(i)]);
  return s + "}";
}

MPI_Comm MpiGroup::split(int color, int key, const std::string& what) const {
  std::vector<MPI_Request> req(1);
  MPI_Ibarrier(comm_, &req[0]);
  mpi_wait(req, timeout_, "split of group " + label() + " into " + what);
  MPI_Comm c;
  MPI_Comm_split(comm_, color, key, &c);
  return c;
}

namespace {

int checked_count(int64_t bytes, const std::string& what) {
  DITGEN_CHECK(bytes <= INT_MAX, "[mpi] {}: a message of {} bytes exceeds MPI's int counts; use the NCCL backend",
               what, bytes);
  return static_cast<int>(bytes);
}

class MpiWork : public Work {
 public:
  MpiWork(std::vector<MPI_Request> reqs, double timeout, std::string what, at::Tensor keep_alive)
      : reqs_(std::move(reqs)), timeout_(timeout), what_(std::move(what)), keep_(std::move(keep_alive)) {}
  void wait() override { mpi_wait(reqs_, timeout_, what_); }

 private:
  std::vector<MPI_Request> reqs_;
  double timeout_;
  std::string what_;
  at::Tensor keep_;
};

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, std::string name, double timeout)
      : group_(comm, std::move(name), timeout), timeout_(timeout) {
    rank_ = group_.rank();
    size_ = group_.size();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  std::string name() const override { return group_.label(); }

  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override {
    return std::make_shared<MpiCommunicator>(group_.split(color, key, name), name, timeout_);
  }

  void all_reduce(at::Tensor& t, ReduceOp op) override {
    check_cpu(t, "all_reduce");
    // MPI has no bf16/fp16 sums: reduce in fp32 (or fp64) and cast back.
    at::Tensor buf = t.is_contiguous() ? t : t.contiguous();
    const bool low = buf.scalar_type() == at::kBFloat16 || buf.scalar_type() == at::kHalf;
    if (low) buf = buf.to(at::kFloat);
    MPI_Datatype type = mpi_type(buf.scalar_type());
    MPI_Op mop = op == ReduceOp::Max ? MPI_MAX : MPI_SUM;
    std::vector<MPI_Request> req(1);
    MPI_Iallreduce(MPI_IN_PLACE, buf.data_ptr(), checked_count(buf.numel(), "all_reduce"), type, mop, comm(), &req[0]);
    mpi_wait(req, timeout_, what("all_reduce"));
    if (op == ReduceOp::Avg) buf.div_(size_);
    if (!buf.is_same(t)) t.copy_(buf);
  }

  at::Tensor all_gather(const at::Tensor& t, int64_t dim, const std::vector<int64_t>& sizes) override {
    check_cpu(t, "all_gather");
    DITGEN_CHECK(static_cast<int>(sizes.size()) == size_, "internal: all_gather got {} sizes for {} ranks", sizes.size(), size_);
    DITGEN_CHECK(t.size(dim) == sizes[rank_], "internal: all_gather on {}: this rank holds {} rows but sizes say {}",
                 name(), t.size(dim), sizes[rank_]);
    at::Tensor src = t.movedim(dim, 0).contiguous();
    const int64_t row_bytes = inner_bytes(t, dim);  // one index along `dim`
    int64_t total = 0;
    std::vector<int> counts(size_), displs(size_);
    for (int r = 0; r < size_; ++r) {
      counts[r] = checked_count(sizes[r] * row_bytes, "all_gather");
      displs[r] = checked_count(total * row_bytes, "all_gather");
      total += sizes[r];
    }
    auto shape = src.sizes().vec();
    shape[0] = total;
    at::Tensor out = at::empty(shape, src.options());
    std::vector<MPI_Request> req(1);
    MPI_Iallgatherv(src.data_ptr(), counts[rank_], MPI_BYTE, out.data_ptr(), counts.data(), displs.data(), MPI_BYTE,
                    comm(), &req[0]);
    mpi_wait(req, timeout_, what("all_gather"));
    return out.movedim(0, dim).contiguous();
  }

  std::vector<at::Tensor> all_to_all(const std::vector<at::Tensor>& send,
                                     const std::vector<std::vector<int64_t>>& recv_shapes) override {
    DITGEN_CHECK(static_cast<int>(send.size()) == size_ && static_cast<int>(recv_shapes.size()) == size_,
                 "internal: all_to_all on {} needs one tensor per rank", name());
    std::vector<int> scounts(size_), sdispls(size_), rcounts(size_), rdispls(size_);
    int64_t soff = 0, roff = 0;
    std::vector<at::Tensor> sendc;
    for (int r = 0; r < size_; ++r) {
      check_cpu(send[r], "all_to_all");
      sendc.push_back(send[r].contiguous());
      const int64_t sb = sendc[r].numel() * sendc[r].element_size();
      scounts[r] = checked_count(sb, "all_to_all");
      sdispls[r] = checked_count(soff, "all_to_all");
      soff += sb;
      int64_t n = 1;
      for (auto d : recv_shapes[r]) n *= d;
      const int64_t rb = n * sendc[r].element_size();
      rcounts[r] = checked_count(rb, "all_to_all");
      rdispls[r] = checked_count(roff, "all_to_all");
      roff += rb;
    }
    at::Tensor sbuf = at::empty({soff}, at::kByte), rbuf = at::empty({roff}, at::kByte);
    for (int r = 0; r < size_; ++r)
      if (scounts[r]) std::memcpy(sbuf.data_ptr<uint8_t>() + sdispls[r], sendc[r].data_ptr(), scounts[r]);
    std::vector<MPI_Request> req(1);
    MPI_Ialltoallv(sbuf.data_ptr(), scounts.data(), sdispls.data(), MPI_BYTE, rbuf.data_ptr(), rcounts.data(),
                   rdispls.data(), MPI_BYTE, comm(), &req[0]);
    mpi_wait(req, timeout_, what("all_to_all"));
    std::vector<at::Tensor> out;
    for (int r = 0; r < size_; ++r) {
      at::Tensor t = at::empty(recv_shapes[r], sendc[0].options());
      if (rcounts[r]) std::memcpy(t.data_ptr(), rbuf.data_ptr<uint8_t>() + rdispls[r], rcounts[r]);
      out.push_back(t);
    }
    return out;
  }

  std::unique_ptr<Work> send_recv(const at::Tensor& send, int dst, at::Tensor& recv, int src) override {
    check_cpu(send, "send_recv");
    DITGEN_CHECK(recv.is_contiguous(), "internal: send_recv needs a contiguous receive buffer");
    at::Tensor s = send.contiguous();
    std::vector<MPI_Request> req(2);
    const int tag = 7;
    MPI_Irecv(recv.data_ptr(), checked_count(recv.numel() * recv.element_size(), "send_recv"), MPI_BYTE, src, tag,
              comm(), &req[0]);
    MPI_Isend(s.data_ptr(), checked_count(s.numel() * s.element_size(), "send_recv"), MPI_BYTE, dst, tag, comm(),
              &req[1]);
    return std::make_unique<MpiWork>(std::move(req), timeout_, what("send_recv"), s);
  }

  void broadcast(at::Tensor& t, int root) override {
    check_cpu(t, "broadcast");
    DITGEN_CHECK(t.is_contiguous(), "internal: broadcast needs a contiguous tensor");
    std::vector<MPI_Request> req(1);
    MPI_Ibcast(t.data_ptr(), checked_count(t.numel() * t.element_size(), "broadcast"), MPI_BYTE, root, comm(), &req[0]);
    mpi_wait(req, timeout_, what("broadcast"));
  }

  void barrier() override {
    std::vector<MPI_Request> req(1);
    MPI_Ibarrier(comm(), &req[0]);
    mpi_wait(req, timeout_, what("barrier"));
  }

 private:
  std::string what(const char* op) const { return std::string(op) + " on group " + name(); }
  void check_cpu(const at::Tensor& t, const char* op) const {
    DITGEN_CHECK(!t.is_cuda(), "[mpi] {} on group {}: the MPI backend takes CPU tensors", op, name());
  }
  static int64_t inner_bytes(const at::Tensor& t, int64_t dim) {
    int64_t n = t.element_size();
    for (int64_t d = 0; d < t.dim(); ++d)
      if (d != dim) n *= t.size(d);
    return n;
  }
  static MPI_Datatype mpi_type(at::ScalarType t) {
    switch (t) {
      case at::kFloat: return MPI_FLOAT;
      case at::kDouble: return MPI_DOUBLE;
      case at::kLong: return MPI_INT64_T;
      case at::kInt: return MPI_INT32_T;
      default: fail("[mpi] cannot reduce tensors of type {}", c10::toString(t));
    }
  }

  MPI_Comm comm() const { return group_.comm(); }

  MpiGroup group_;
  double timeout_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::shared_ptr<Communicator> make_mpi_world(double timeout_s) {
  return std::make_shared<MpiCommunicator>(MPI_COMM_WORLD, "world", timeout_s);
}

}  // namespace ditgen::dist
