#include "lib/comm/mpi_communicator.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"

namespace ditgen::comm {

namespace {

std::string mpi_error_string(int rc) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS || len <= 0) return fmt::format("MPI error code {}", rc);
  return std::string(buf, static_cast<size_t>(len));
}

// Buffers of operations abandoned while MPI may still use them: referenced forever, never freed.
void keep_in_flight(const std::vector<at::Tensor>& buffers) {
  static auto* kept = new std::vector<at::Tensor>();  // never destroyed, like the buffers
  kept->insert(kept->end(), buffers.begin(), buffers.end());
}

// The code to report for a failed MPI_Testall: MPI_ERR_IN_STATUS means "see each request's status".
int request_error(int rc, const std::vector<MPI_Status>& statuses) {
  if (rc != MPI_ERR_IN_STATUS) return rc;
  for (const auto& s : statuses)
    if (s.MPI_ERROR != MPI_SUCCESS && s.MPI_ERROR != MPI_ERR_PENDING) return s.MPI_ERROR;
  return rc;
}

}  // namespace

void mpi_check(int rc, const char* call, const std::string& what) {
  if (rc != MPI_SUCCESS) fail("[mpi] {}: {} failed: {}", what, call, mpi_error_string(rc));
}

void mpi_wait(std::vector<MPI_Request>& reqs, double timeout_s, const std::string& what,
              const std::vector<at::Tensor>& in_flight) {
  if (reqs.empty()) return;
  const double start = runtime::now_seconds();
  const double deadline = start + timeout_s;
  // A large message moves only while this rank polls (MPI progresses its fragments inside MPI_Testall):
  // sleeping between polls made a 57 MB all-reduce through host memory take ~0.5 s. So poll without
  // sleeping (yielding the core) for as long as the bytes could take at 250 MB/s, at most 2 s; then back off.
  int64_t bytes = 0;
  for (const at::Tensor& t : in_flight)
    if (t.defined()) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  const double spin_until = start + std::min(2.0, static_cast<double>(bytes) / 2.5e8);
  std::vector<MPI_Status> statuses(reqs.size());
  long sleep_ns = 4000;
  for (int polls = 0;; ++polls) {
    int done = 0;
    const int rc = MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &done, statuses.data());
    if (rc != MPI_SUCCESS) {
      keep_in_flight(in_flight);
      mpi_check(request_error(rc, statuses), "MPI_Testall", what);
    }
    if (done) return;
    // Small messages between ranks that are both here complete within a few immediate polls; after
    // those, sleeping with back-off gives the core to ranks still computing, and costs at most about
    // the time already waited (capped at 1 ms) in latency.
    if (polls < 32) continue;
    const double now = runtime::now_seconds();
    if (now < spin_until) {
      sched_yield();
      continue;
    }
    if (now > deadline) {
      keep_in_flight(in_flight);
      fail("[mpi] {} timed out after {:.0f} s: a peer rank is stuck or gone (--comm-timeout)", what,
           timeout_s);
    }
    timespec ts{0, sleep_ns};
    nanosleep(&ts, nullptr);
    sleep_ns = std::min(2 * sleep_ns, 1000000L);
  }
}

MpiGroup::MpiGroup(MPI_Comm comm, std::string name, double timeout_s)
    : comm_(comm), name_(std::move(name)), timeout_(timeout_s) {
  const std::string what = "creating group " + name_;
  // Errors come back as codes (sub-groups inherit this, but say it): each call names its operation.
  mpi_check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", what);
  mpi_check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank", what);
  mpi_check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size", what);
  int world_rank = 0;
  mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank), "MPI_Comm_rank", what);
  at::Tensor mine = at::full({1}, world_rank, at::kInt), all = at::empty({size_}, at::kInt);
  std::vector<MPI_Request> req(1);
  mpi_check(MPI_Iallgather(mine.data_ptr(), 1, MPI_INT, all.data_ptr(), 1, MPI_INT, comm_, &req[0]),
            "MPI_Iallgather", what);
  mpi_wait(req, timeout_, what, {mine, all});
  members_.assign(all.data_ptr<int>(), all.data_ptr<int>() + size_);
}

MpiGroup::~MpiGroup() {
  int finalized = 0;
  if (MPI_Finalized(&finalized) != MPI_SUCCESS || finalized) return;
  if (comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL) {
    const int rc = MPI_Comm_free(&comm_);
    if (rc != MPI_SUCCESS)
      spdlog::warn("[mpi] freeing group {}: MPI_Comm_free failed: {}", label(), mpi_error_string(rc));
  }
}

std::string MpiGroup::label() const {
  std::string s = name_ + " {";
  for (int i = 0; i < size_; ++i) s += (i ? "," : "") + std::to_string(members_[static_cast<size_t>(i)]);
  return s + "}";
}

MPI_Comm MpiGroup::split(int color, int key, const std::string& what) const {
  const std::string op = "split of group " + label() + " into " + what;
  std::vector<MPI_Request> req(1);
  mpi_check(MPI_Ibarrier(comm_, &req[0]), "MPI_Ibarrier", op);
  mpi_wait(req, timeout_, op);
  MPI_Comm c = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split(comm_, color, key, &c), "MPI_Comm_split", op);
  return c;
}

namespace {

// A count for MPI's int arguments: refuses what MPI would misread (negative or over INT_MAX).
int checked_count(int64_t n, const char* unit, const std::string& what) {
  DITGEN_CHECK(n >= 0, "internal: {}: negative message size {} {}", what, n, unit);
  DITGEN_CHECK(n <= INT_MAX, "[mpi] {}: a message of {} {} exceeds MPI's int counts; use the NCCL backend",
               what, n, unit);
  return static_cast<int>(n);
}

// Bytes of a tensor of `shape` with `elem_size`-byte elements; refuses negative sizes and overflow.
int64_t shape_bytes(const std::vector<int64_t>& shape, int64_t elem_size, const std::string& what) {
  int64_t n = elem_size;
  for (int64_t d : shape)
    DITGEN_CHECK(d >= 0 && !__builtin_mul_overflow(n, d, &n), "internal: {}: invalid receive shape [{}]",
                 what, fmt::join(shape, ", "));
  return n;
}

class MpiWork : public Work {
 public:
  MpiWork(std::vector<MPI_Request> reqs, double timeout, std::string what, std::vector<at::Tensor> buffers)
      : reqs_(std::move(reqs)), timeout_(timeout), what_(std::move(what)), buffers_(std::move(buffers)) {}
  // Dropped before completion (an exception unwound past wait()): MPI may still use the buffers.
  ~MpiWork() override {
    if (std::any_of(reqs_.begin(), reqs_.end(), [](MPI_Request r) { return r != MPI_REQUEST_NULL; }))
      keep_in_flight(buffers_);
  }
  void wait() override {
    mpi_wait(reqs_, timeout_, what_, buffers_);
    buffers_.clear();
  }

 private:
  std::vector<MPI_Request> reqs_;
  double timeout_;
  std::string what_;
  std::vector<at::Tensor> buffers_;
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
    const std::string what = this->what("all_reduce");
    check_cpu(t, what);
    // MPI has no bf16/fp16 sums: reduce in fp32 (or fp64) and cast back.
    at::Tensor buf = t.is_contiguous() ? t : t.contiguous();
    const bool low = buf.scalar_type() == at::kBFloat16 || buf.scalar_type() == at::kHalf;
    if (low) buf = buf.to(at::kFloat);
    const MPI_Datatype type = mpi_type(buf.scalar_type(), what);
    const MPI_Op mop = op == ReduceOp::Max ? MPI_MAX : MPI_SUM;
    const int count = checked_count(buf.numel(), "elements", what);
    const int bytes = checked_count(buf.numel() * buf.element_size(), "bytes", what);
    agree_sizes(std::vector<int>(size_, bytes), std::vector<int>(size_, bytes), what);
    std::vector<MPI_Request> req(1);
    mpi_check(MPI_Iallreduce(MPI_IN_PLACE, buf.data_ptr(), count, type, mop, comm(), &req[0]),
              "MPI_Iallreduce", what);
    mpi_wait(req, timeout_, what, {buf});
    if (op == ReduceOp::Avg) buf.div_(size_);
    if (!buf.is_same(t)) t.copy_(buf);
  }

  at::Tensor all_gather(const at::Tensor& t, int64_t dim, const std::vector<int64_t>& sizes) override {
    const std::string what = this->what("all_gather");
    check_cpu(t, what);
    dim = at::maybe_wrap_dim(dim, t.dim());
    DITGEN_CHECK(static_cast<int>(sizes.size()) == size_, "internal: {} got {} sizes for {} ranks", what,
                 sizes.size(), size_);
    DITGEN_CHECK(t.size(dim) == sizes[rank_], "internal: {}: this rank holds {} rows but sizes say {}", what,
                 t.size(dim), sizes[rank_]);
    at::Tensor src = t.movedim(dim, 0).contiguous();
    const int64_t row_bytes = inner_bytes(t, dim);  // one index along `dim`
    int64_t total = 0;
    std::vector<int> counts(size_), displs(size_);
    for (int r = 0; r < size_; ++r) {
      DITGEN_CHECK(sizes[r] >= 0, "internal: {}: rank {} holds {} rows", what, r, sizes[r]);
      counts[r] = checked_count(sizes[r] * row_bytes, "bytes", what);
      displs[r] = checked_count(total * row_bytes, "bytes", what);
      total += sizes[r];
    }
    auto shape = src.sizes().vec();
    shape[0] = total;
    at::Tensor out = at::empty(shape, src.options());
    agree_sizes(std::vector<int>(size_, counts[rank_]), counts, what);
    std::vector<MPI_Request> req(1);
    mpi_check(MPI_Iallgatherv(src.data_ptr(), counts[rank_], MPI_BYTE, out.data_ptr(), counts.data(),
                              displs.data(), MPI_BYTE, comm(), &req[0]),
              "MPI_Iallgatherv", what);
    mpi_wait(req, timeout_, what, {src, out});
    return out.movedim(0, dim).contiguous();
  }

  std::vector<at::Tensor> all_to_all(const std::vector<at::Tensor>& send,
                                     const std::vector<std::vector<int64_t>>& recv_shapes) override {
    const std::string what = this->what("all_to_all");
    DITGEN_CHECK(static_cast<int>(send.size()) == size_ && static_cast<int>(recv_shapes.size()) == size_,
                 "internal: {} needs one tensor and one receive shape per rank, got {} and {}", what,
                 send.size(), recv_shapes.size());
    std::vector<int> scounts(size_), sdispls(size_), rcounts(size_), rdispls(size_);
    int64_t soff = 0, roff = 0;
    std::vector<at::Tensor> sendc;
    for (int r = 0; r < size_; ++r) {
      check_cpu(send[r], what);
      // The receive tensors take send[0]'s dtype: another element size would overrun them.
      DITGEN_CHECK(send[r].scalar_type() == send[0].scalar_type(), "internal: {}: tensors of types {} and {}",
                   what, c10::toString(send[0].scalar_type()), c10::toString(send[r].scalar_type()));
      sendc.push_back(send[r].contiguous());
      const int64_t sb = sendc[r].numel() * sendc[r].element_size();
      scounts[r] = checked_count(sb, "bytes", what);
      sdispls[r] = checked_count(soff, "bytes", what);
      soff += sb;
      const int64_t rb = shape_bytes(recv_shapes[r], sendc[r].element_size(), what);
      rcounts[r] = checked_count(rb, "bytes", what);
      rdispls[r] = checked_count(roff, "bytes", what);
      roff += rb;
    }
    agree_sizes(scounts, rcounts, what);
    at::Tensor sbuf = at::empty({soff}, at::kByte), rbuf = at::empty({roff}, at::kByte);
    for (int r = 0; r < size_; ++r)
      if (scounts[r]) std::memcpy(sbuf.data_ptr<uint8_t>() + sdispls[r], sendc[r].data_ptr(), scounts[r]);
    std::vector<MPI_Request> req(1);
    mpi_check(MPI_Ialltoallv(sbuf.data_ptr(), scounts.data(), sdispls.data(), MPI_BYTE, rbuf.data_ptr(),
                             rcounts.data(), rdispls.data(), MPI_BYTE, comm(), &req[0]),
              "MPI_Ialltoallv", what);
    mpi_wait(req, timeout_, what, {sbuf, rbuf});
    std::vector<at::Tensor> out;
    for (int r = 0; r < size_; ++r) {
      at::Tensor t = at::empty(recv_shapes[r], sendc[0].options());
      if (rcounts[r]) std::memcpy(t.data_ptr(), rbuf.data_ptr<uint8_t>() + rdispls[r], rcounts[r]);
      out.push_back(t);
    }
    return out;
  }

  std::unique_ptr<Work> send_recv(const at::Tensor& send, int dst, at::Tensor& recv, int src) override {
    const std::string what = this->what("send_recv");
    check_cpu(send, what);
    check_cpu(recv, what);
    check_rank(dst, "destination", what);
    check_rank(src, "source", what);
    DITGEN_CHECK(recv.is_contiguous(), "internal: {} needs a contiguous receive buffer", what);
    DITGEN_CHECK(recv.scalar_type() == send.scalar_type(), "internal: {} sends {} into a {} buffer", what,
                 c10::toString(send.scalar_type()), c10::toString(recv.scalar_type()));
    at::Tensor s = send.contiguous();
    const int scount = checked_count(s.numel() * s.element_size(), "bytes", what);
    const int rcount = checked_count(recv.numel() * recv.element_size(), "bytes", what);
    {  // sizes first (see agree_sizes): the receive is posted only for the size that src says it sends
      at::Tensor mine = at::full({1}, scount, at::kInt), theirs = at::empty({1}, at::kInt);
      std::vector<MPI_Request> req(2, MPI_REQUEST_NULL);
      mpi_check(MPI_Irecv(theirs.data_ptr(), 1, MPI_INT, src, kSizeTag, comm(), &req[0]), "MPI_Irecv", what);
      const int rc = MPI_Isend(mine.data_ptr(), 1, MPI_INT, dst, kSizeTag, comm(), &req[1]);
      if (rc != MPI_SUCCESS) keep_in_flight({theirs});
      mpi_check(rc, "MPI_Isend", what);
      mpi_wait(req, timeout_, what, {mine, theirs});
      check_size(src, theirs.item<int>(), rcount, what);
    }
    std::vector<MPI_Request> req(2, MPI_REQUEST_NULL);
    mpi_check(MPI_Irecv(recv.data_ptr(), rcount, MPI_BYTE, src, kDataTag, comm(), &req[0]), "MPI_Irecv",
              what);
    const int rc = MPI_Isend(s.data_ptr(), scount, MPI_BYTE, dst, kDataTag, comm(), &req[1]);
    if (rc != MPI_SUCCESS) keep_in_flight({recv});  // the receive is posted
    mpi_check(rc, "MPI_Isend", what);
    return std::make_unique<MpiWork>(std::move(req), timeout_, what, std::vector<at::Tensor>{s, recv});
  }

  void broadcast(at::Tensor& t, int root) override {
    const std::string what = this->what("broadcast");
    check_cpu(t, what);
    check_rank(root, "root", what);
    DITGEN_CHECK(t.is_contiguous(), "internal: {} needs a contiguous tensor", what);
    const int bytes = checked_count(t.numel() * t.element_size(), "bytes", what);
    agree_sizes(std::vector<int>(size_, bytes), std::vector<int>(size_, bytes), what);
    std::vector<MPI_Request> req(1);
    mpi_check(MPI_Ibcast(t.data_ptr(), bytes, MPI_BYTE, root, comm(), &req[0]), "MPI_Ibcast", what);
    mpi_wait(req, timeout_, what, {t});
  }

  void barrier() override {
    const std::string what = this->what("barrier");
    std::vector<MPI_Request> req(1);
    mpi_check(MPI_Ibarrier(comm(), &req[0]), "MPI_Ibarrier", what);
    mpi_wait(req, timeout_, what);
  }

 private:
  static constexpr int kDataTag = 7, kSizeTag = 8;

  // Before any data moves, every rank states the sizes it is about to use (`sent[r]`: bytes this rank
  // sends to rank r; `expected[r]`: bytes it expects from r) and a difference ends the job. Ranks that
  // disagree (other flags, a bug) would otherwise make MPI truncate a message, which Open MPI 4.1 may
  // turn into a write past the buffer without reporting it, or leave part of a buffer unwritten.
  void agree_sizes(const std::vector<int>& sent, const std::vector<int>& expected, const std::string& what) {
    at::Tensor mine = at::empty({size_}, at::kInt), theirs = at::empty({size_}, at::kInt);
    std::copy(sent.begin(), sent.end(), mine.data_ptr<int>());
    std::vector<MPI_Request> req(1);
    mpi_check(MPI_Ialltoall(mine.data_ptr(), 1, MPI_INT, theirs.data_ptr(), 1, MPI_INT, comm(), &req[0]),
              "MPI_Ialltoall", what);
    mpi_wait(req, timeout_, what, {mine, theirs});
    for (int r = 0; r < size_; ++r) check_size(r, theirs.data_ptr<int>()[r], expected[r], what);
  }
  void check_size(int from, int sent, int expected, const std::string& what) const {
    DITGEN_CHECK(
        sent == expected,
        "[mpi] {}: world rank {} sends {} bytes where this rank expects {}: the ranks disagree on the "
        "shapes (were they all started with the same request?)",
        what, group_.member(from), sent, expected);
  }
  std::string what(const char* op) const { return std::string(op) + " on group " + name(); }
  static void check_cpu(const at::Tensor& t, const std::string& what) {
    DITGEN_CHECK(!t.is_cuda(), "[mpi] {}: the MPI backend takes CPU tensors", what);
  }
  void check_rank(int r, const char* role, const std::string& what) const {
    DITGEN_CHECK(r >= 0 && r < size_, "internal: {}: {} {} is not a rank of the group", what, role, r);
  }
  static int64_t inner_bytes(const at::Tensor& t, int64_t dim) {
    int64_t n = t.element_size();
    for (int64_t d = 0; d < t.dim(); ++d)
      if (d != dim) n *= t.size(d);
    return n;
  }
  static MPI_Datatype mpi_type(at::ScalarType t, const std::string& what) {
    switch (t) {
      case at::kFloat: return MPI_FLOAT;
      case at::kDouble: return MPI_DOUBLE;
      case at::kLong: return MPI_INT64_T;
      case at::kInt: return MPI_INT32_T;
      default: fail("[mpi] {}: cannot reduce tensors of type {}", what, c10::toString(t));
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

}  // namespace ditgen::comm
