#include "lib/comm/host_staged.h"

#include <utility>

namespace ditgen::comm {

namespace {

// A host copy of `t` in page-locked memory where the build has a GPU allocator (the copy then runs at
// the bus's full rate), else in ordinary memory.
at::Tensor to_host(const at::Tensor& t) {
  if (!t.is_cuda()) return t;
  at::Tensor h = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true));
  h.copy_(t);
  return h;
}

class StagedWork : public Work {
 public:
  StagedWork(std::unique_ptr<Work> inner, at::Tensor host_recv, at::Tensor recv, at::Tensor host_send)
      : inner_(std::move(inner)), host_recv_(std::move(host_recv)), recv_(std::move(recv)),
        host_send_(std::move(host_send)) {}
  void wait() override {
    inner_->wait();
    if (host_recv_.defined()) recv_.copy_(host_recv_);
    host_send_.reset();  // the send buffer lives until the exchange is done
  }

 private:
  std::unique_ptr<Work> inner_;
  at::Tensor host_recv_, recv_, host_send_;
};

// GPU tensors over a CPU communicator: each operation copies its inputs to the host, runs there and
// copies the results back to the tensors' device. The copies synchronise with the caller's stream, so
// the operation order and the inner communicator's deadlines stay exactly as on the CPU.
class HostStaged : public Communicator {
 public:
  explicit HostStaged(std::shared_ptr<Communicator> inner) : inner_(std::move(inner)) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string name() const override { return inner_->name(); }
  std::string backend() const override { return inner_->backend() + " (GPU tensors through host memory)"; }

  std::shared_ptr<Communicator> split(int color, int key, const std::string& name) override {
    return std::make_shared<HostStaged>(inner_->split(color, key, name));
  }

  void all_reduce(at::Tensor& t, ReduceOp op) override {
    if (!t.is_cuda()) return inner_->all_reduce(t, op);
    at::Tensor h = to_host(t);
    inner_->all_reduce(h, op);
    t.copy_(h);
  }

  at::Tensor all_gather(const at::Tensor& t, int64_t dim, const std::vector<int64_t>& sizes) override {
    if (!t.is_cuda()) return inner_->all_gather(t, dim, sizes);
    return inner_->all_gather(to_host(t), dim, sizes).to(t.device());
  }

  std::vector<at::Tensor> all_to_all(const std::vector<at::Tensor>& send,
                                     const std::vector<std::vector<int64_t>>& recv_shapes) override {
    const bool cuda = !send.empty() && send.front().is_cuda();
    if (!cuda) return inner_->all_to_all(send, recv_shapes);
    std::vector<at::Tensor> host;
    host.reserve(send.size());
    for (const at::Tensor& s : send) host.push_back(to_host(s));
    std::vector<at::Tensor> out = inner_->all_to_all(host, recv_shapes);
    for (at::Tensor& o : out) o = o.to(send.front().device());
    return out;
  }

  std::unique_ptr<Work> send_recv(const at::Tensor& send, int dst, at::Tensor& recv, int src) override {
    if (!send.is_cuda() && !recv.is_cuda()) return inner_->send_recv(send, dst, recv, src);
    at::Tensor host_send = to_host(send);
    at::Tensor host_recv = recv.is_cuda() ? to_host(recv) : recv;
    std::unique_ptr<Work> w = inner_->send_recv(host_send, dst, host_recv, src);
    return std::make_unique<StagedWork>(std::move(w), recv.is_cuda() ? host_recv : at::Tensor(), recv, host_send);
  }

  void broadcast(at::Tensor& t, int root) override {
    if (!t.is_cuda()) return inner_->broadcast(t, root);
    at::Tensor h = to_host(t);
    inner_->broadcast(h, root);
    t.copy_(h);
  }

  void barrier() override { inner_->barrier(); }

 private:
  std::shared_ptr<Communicator> inner_;
};

}  // namespace

std::shared_ptr<Communicator> make_host_staged(std::shared_ptr<Communicator> cpu) {
  return std::make_shared<HostStaged>(std::move(cpu));
}

}  // namespace ditgen::comm
