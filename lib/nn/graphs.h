#pragma once
// CUDA graphs for a forward's repeated blocks (what torch.compile's "reduce-overhead" mode does for the
// peer): a step launches thousands of kernels, and where they are short (LTX-2's audio stream, norms,
// residuals, small GEMMs) the host's launch time leaves the GPU idle between them. The first run of a
// shape is eager (it builds the cuBLAS / cuDNN plans and workspaces); the second is captured into a graph
// and replayed; every later run of that shape copies its inputs into the captured ones and replays.
#include <ATen/ATen.h>

#include <functional>
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

}  // namespace ditgen::nn
