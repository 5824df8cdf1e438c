#pragma once
// CUDA graphs for a forward's repeated blocks (what torch.compile's "reduce-overhead" mode does for the
// peer): a step launches thousands of kernels, and where they are short (LTX-2's audio stream, norms,
// residuals, small GEMMs) the host's launch time leaves the GPU idle between them. The first run of a
// shape is eager (it builds the cuBLAS / cuDNN plans and workspaces); the second is captured into a graph
// and replayed; every later run of that shape copies its inputs into the captured ones and replays.
#include <ATen/ATen.h>

#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

namespace ditgen::nn {

// Process-wide switch (--cuda-graphs on|off; on by default).
void set_cuda_graphs(bool on);
bool cuda_graphs_on();

class BlockGraphs {
 public:
  BlockGraphs();
  ~BlockGraphs();
  BlockGraphs(BlockGraphs&&) noexcept;
  BlockGraphs& operator=(BlockGraphs&&) noexcept;

  // Runs `blocks`, which reads the tensors `state` points to and replaces them with its results (an
  // undefined one is an output only), and reads the device tensors `fixed` (tables the model keeps between
  // calls: their addresses and shapes are part of the graph's key, never copied). Eager when `eligible` is false (collectives in the
  // blocks, --offload, DBCache's decisions), off the GPU, under --trace, or with --cuda-graphs off.
  // Blocks that cannot be captured (a host read inside) end the job with an error naming --cuda-graphs off.
  void run(bool eligible, const std::vector<at::Tensor*>& state, const std::vector<at::Tensor>& fixed,
           const std::function<void()>& blocks) const;

  // Graphs captured so far (for the tests).
  int64_t captured() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// DITGEN_SIDE_STREAM=0 keeps a model's side-stream work on the main stream (the A/B switch; on by default).
bool side_streams_on();

// A second CUDA stream beside the current ("main") one, for a model's small work that is independent of the
// main stream's except where the two meet (LTX-2's audio stream: 126 tokens, ~45 kernels of 5-10 us a block,
// which otherwise queue one after another between the video stream's large kernels). Its kernels have the
// higher priority, so the GPU runs them as soon as they are ready. Ordered by events only where the work
// meets; captured with the main stream into the blocks' CUDA graph (a fork and a join of the capture).
//
// Off (the CPU, collectives in the work, --offload, --trace), everything runs on the current stream in the same
// order. On, every tensor made on one stream and read on the other must be handed over (wait_main / main_waits
// name it) unless it outlives the SideStream: the caching allocator must not give its memory to new work on the
// stream that made it while the other may still read it.
class SideStream {
 public:
  // Forks: the side stream's work follows the main stream's so far; `inputs` (made on the main stream) are
  // handed over to it.
  SideStream(bool on, std::initializer_list<at::Tensor> inputs);
  // Joins: the main stream's later work follows the side stream's.
  ~SideStream();
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;

  bool on() const { return impl_ != nullptr; }
  // Runs `work` with the side stream as the current stream.
  template <class F>
  auto run(F&& work) -> decltype(work()) {
    const Scope scope(*this);
    return work();
  }
  // The side stream waits for the main stream's work so far, and reads `tensors` made there.
  void wait_main(std::initializer_list<at::Tensor> tensors);
  // The main stream waits for the side stream's work so far, and reads `tensors` made there.
  void main_waits(std::initializer_list<at::Tensor> tensors);

 private:
  struct Scope {
    explicit Scope(SideStream& s);
    ~Scope();
    SideStream& s;
  };
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ditgen::nn
