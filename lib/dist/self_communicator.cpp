#include "lib/dist/communicator.h"
#include "lib/runtime/error.h"

namespace ditgen::dist {

namespace {

class DoneWork : public Work {
 public:
  void wait() override {}
};

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
  at::Tensor all_gather(const at::Tensor& t, int64_t, const std::vector<int64_t>&) override { return t; }
  std::vector<at::Tensor> all_to_all(const std::vector<at::Tensor>& send,
                                     const std::vector<std::vector<int64_t>>&) override {
    return send;
  }
  std::unique_ptr<Work> send_recv(const at::Tensor& send, int, at::Tensor& recv, int) override {
    recv.copy_(send);
    return std::make_unique<DoneWork>();
  }
  void broadcast(at::Tensor&, int) override {}
  void barrier() override {}

 private:
  std::string name_;
};

}  // namespace

std::shared_ptr<Communicator> make_self_communicator(const std::string& name) {
  return std::make_shared<SelfCommunicator>(name);
}

}  // namespace ditgen::dist
