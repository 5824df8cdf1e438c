#include <fmt/ranges.h>

#include "lib/comm/communicator.h"
#include "lib/runtime/error.h"

namespace ditgen::comm {

namespace {

class DoneWork : public Work {
 public:
  void wait() override {}
};

// Every collective is the identity, but its arguments are checked as a real backend checks them, so
// that a call that would fail across ranks fails here too instead of passing silently.
class SelfCommunicator : public Communicator {
 public:
  explicit SelfCommunicator(std::string name) : name_(std::move(name)) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return name_ + " {0}"; }
  std::string backend() const override { return "self"; }
  std::shared_ptr<Communicator> split(int, int, const std::string& name) override {
    return std::make_shared<SelfCommunicator>(name);
  }
  void all_reduce(at::Tensor&, ReduceOp) override {}
  at::Tensor all_gather(const at::Tensor& t, int64_t dim, const std::vector<int64_t>& sizes) override {
    DITGEN_CHECK(sizes.size() == 1 && t.size(dim) == sizes[0],
                 "internal: all_gather on {}: this rank holds {} rows but sizes say [{}]", name(),
                 t.size(dim), fmt::join(sizes, ", "));
    return t;
  }
  std::vector<at::Tensor> all_to_all(const std::vector<at::Tensor>& send,
                                     const std::vector<std::vector<int64_t>>& recv_shapes) override {
    DITGEN_CHECK(send.size() == 1 && recv_shapes.size() == 1, "internal: all_to_all on {} needs one tensor",
                 name());
    const int64_t n = c10::multiply_integers(recv_shapes[0]);
    DITGEN_CHECK(send[0].numel() == n, "internal: all_to_all on {}: {} elements into a receive shape [{}]",
                 name(), send[0].numel(), fmt::join(recv_shapes[0], ", "));
    return {send[0].reshape(recv_shapes[0])};
  }
  std::unique_ptr<Work> send_recv(const at::Tensor& send, int dst, at::Tensor& recv, int src) override {
    DITGEN_CHECK(dst == 0 && src == 0, "internal: send_recv on {}: ranks {} and {} are not in the group",
                 name(), dst, src);
    // copy_ would broadcast a smaller tensor silently.
    DITGEN_CHECK(send.numel() == recv.numel() && send.scalar_type() == recv.scalar_type(),
                 "internal: send_recv on {}: {} {} elements into a buffer of {} {}", name(), send.numel(),
                 c10::toString(send.scalar_type()), recv.numel(), c10::toString(recv.scalar_type()));
    recv.copy_(send.reshape(recv.sizes()));
    return std::make_unique<DoneWork>();
  }
  void broadcast(at::Tensor&, int root) override {
    DITGEN_CHECK(root == 0, "internal: broadcast on {}: root {} is not in the group", name(), root);
  }
  void barrier() override {}

 private:
  std::string name_;
};

}  // namespace

std::shared_ptr<Communicator> make_self_communicator(const std::string& name) {
  return std::make_shared<SelfCommunicator>(name);
}

}  // namespace ditgen::comm
