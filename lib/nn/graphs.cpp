#include "lib/nn/graphs.h"

#include <functional>
#include <map>
#include <optional>
#include <string>

#include <spdlog/spdlog.h>

#include "lib/runtime/env.h"
#include "lib/runtime/error.h"
#include "lib/runtime/trace.h"

#ifdef DITGEN_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace ditgen::nn {

namespace {
bool g_graphs_on = true;
}  // namespace

void set_cuda_graphs(bool on) { g_graphs_on = on; }
bool cuda_graphs_on() { return g_graphs_on; }

bool side_streams_on() {
  static const bool on = runtime::env_switch("DITGEN_SIDE_STREAM", true,
                                             "1 (LTX-2's audio stream beside the video's) or 0 (one stream)");
  return on;
}

#ifdef DITGEN_CUDA

namespace {

// Graphs kept per model: a new shape beyond this many (prompts of other lengths, another resolution)
// drops them all, so their memory pool is returned rather than growing with every shape seen.
constexpr size_t kMaxGraphs = 4;

// The shapes, strides and types of the state and the addresses of the fixed tensors.
std::string key_of(const std::vector<at::Tensor*>& state, const std::vector<at::Tensor>& fixed) {
  std::string k;
  for (const at::Tensor* t : state) {
    if (!t->defined()) {
      k += "-;";
      continue;
    }
    k += std::to_string(static_cast<int>(t->scalar_type())) + ":";
    for (int64_t d = 0; d < t->dim(); ++d) k += std::to_string(t->size(d)) + "/" + std::to_string(t->stride(d)) + ",";
    k += ";";
  }
  for (const at::Tensor& t : fixed) {  // the address and the shape: another tensor may come at that address
    k += std::to_string(reinterpret_cast<uintptr_t>(t.defined() ? t.data_ptr() : nullptr)) + "@";
    for (int64_t d = 0; d < (t.defined() ? t.dim() : 0); ++d) k += std::to_string(t.size(d)) + ",";
    k += ";";
  }
  return k;
}

// `to` waits for the work queued on `from` so far.
void wait_for(const at::cuda::CUDAStream& from, const at::cuda::CUDAStream& to) {
  at::cuda::CUDAEvent e;
  e.record(from);
  e.block(to);
}

}  // namespace

struct BlockGraphs::Impl {
  struct Captured {
    at::cuda::CUDAGraph graph;
    std::vector<at::Tensor> inputs;   // the copies the graph reads
    std::vector<at::Tensor> outputs;  // what it leaves in each state slot
  };
  std::map<std::string, int> eager_runs;
  std::map<std::string, std::unique_ptr<Captured>> graphs;
  std::optional<at::cuda::CUDAStream> stream;  // capture needs a stream other than the default one
  // One memory pool for every graph of the model: they replay one at a time on one stream and their outputs
  // are copied out at once, so one graph's scratch memory may be another's output.
  decltype(at::cuda::graph_pool_handle()) pool{0, 0};
  bool failed = false;
};

BlockGraphs::BlockGraphs() : impl_(std::make_unique<Impl>()) {}

void BlockGraphs::run(bool eligible, const std::vector<at::Tensor*>& state, const std::vector<at::Tensor>& fixed,
                      const std::function<void()>& blocks) const {
  Impl& I = *impl_;
  if (!eligible || !g_graphs_on || I.failed || runtime::trace_enabled() || state.empty() || !state[0]->defined() ||
      !state[0]->is_cuda()) {
    blocks();
    return;
  }
  const at::cuda::CUDAStream main = at::cuda::getCurrentCUDAStream();
  const std::string key = key_of(state, fixed);
  auto copy_out = [&](const std::vector<at::Tensor>& outputs) {
    // Copies: the next replay overwrites the graph's own outputs while a caller may still hold them.
    for (size_t j = 0; j < state.size(); ++j) *state[j] = outputs[j].defined() ? outputs[j].clone() : at::Tensor();
  };

  if (spdlog::should_log(spdlog::level::debug))  // which forwards share a graph (-v)
    spdlog::debug("CUDA graphs: key {:016x} ({} fixed tensors), {} run(s) before, {} graph(s)",
                  std::hash<std::string>{}(key), fixed.size(), I.eager_runs.count(key) ? I.eager_runs.at(key) : 0,
                  I.graphs.size());
  if (auto it = I.graphs.find(key); it != I.graphs.end()) {
    Impl::Captured& g = *it->second;
    for (size_t j = 0; j < state.size(); ++j)
      if (state[j]->defined()) g.inputs[j].copy_(*state[j]);
    g.graph.replay();
    copy_out(g.outputs);
    return;
  }
  if (!I.stream) I.stream = at::cuda::getStreamFromPool(false, main.device_index());
  const at::cuda::CUDAStream side = *I.stream;

  if (++I.eager_runs[key] == 1) {  // warm-up, on the stream that will capture (its cuBLAS workspace)
    wait_for(main, side);
    {
      const c10::cuda::CUDAStreamGuard guard(side);
      blocks();
    }
    wait_for(side, main);
    return;
  }

  if (I.graphs.size() >= kMaxGraphs) {
    I.graphs.clear();
    I.pool = {0, 0};
  }
  auto g = std::make_unique<Impl::Captured>();
  for (at::Tensor* t : state) g->inputs.push_back(t->defined() ? t->clone() : at::Tensor());
  for (size_t j = 0; j < state.size(); ++j) *state[j] = g->inputs[j];
  wait_for(main, side);
  // The eager runs' cached blocks go back to the device, so the graph's pool can take them.
  c10::cuda::CUDACachingAllocator::emptyCache();
  try {
    const c10::cuda::CUDAStreamGuard guard(side);
    if (I.pool.first == 0 && I.pool.second == 0) I.pool = at::cuda::graph_pool_handle();
    g->graph.capture_begin(I.pool);
    try {
      blocks();
    } catch (...) {
      try {
        g->graph.capture_end();
      } catch (...) {
      }
      throw;
    }
    g->graph.capture_end();
  } catch (const std::exception& e) {
    // Something in the blocks cannot be captured (a host read, a synchronisation). A failed capture leaves
    // LibTorch's CUDA generator and allocator in their capture state, so the process cannot go on safely.
    I.failed = true;
    throw Error(fmt::format("capturing the transformer's blocks as a CUDA graph failed ({}); rerun with "
                            "--cuda-graphs off",
                            e.what()));
  }
  for (at::Tensor* t : state) g->outputs.push_back(*t);
  g->graph.replay();
  copy_out(g->outputs);
  I.graphs[key] = std::move(g);
}

int64_t BlockGraphs::captured() const { return static_cast<int64_t>(impl_->graphs.size()); }

struct SideStream::Impl {
  Impl(at::cuda::CUDAStream main, at::cuda::CUDAStream side) : main(main), side(side) {}
  at::cuda::CUDAStream main, side;
  std::optional<c10::cuda::CUDAStreamGuard> guard;  // while a Scope runs
  // Handed-over tensors, held until the stream that made them next waits for the one that reads them: from then on
  // its new work (which may get their memory) follows the reads. (record_stream would do it too, but under graph
  // capture it holds their memory until the capture ends: GBs for LTX-2's 48 blocks.)
  std::vector<at::Tensor> read_on_side, read_on_main;
};

SideStream::SideStream(bool on, std::initializer_list<at::Tensor> inputs) {
  if (!on) return;
  const at::cuda::CUDAStream main = at::cuda::getCurrentCUDAStream();
  impl_ = std::make_unique<Impl>(main, at::cuda::getStreamFromPool(/*isHighPriority=*/true, main.device_index()));
  wait_main(inputs);
}

SideStream::~SideStream() {
  if (!impl_) return;
  try {
    wait_for(impl_->side, impl_->main);
  } catch (const std::exception& e) {  // (unwinding from a failed step: the error that ended it is the one to see)
    spdlog::error("joining the side stream: {}", e.what());
  }
}

void SideStream::wait_main(std::initializer_list<at::Tensor> tensors) {
  if (!impl_) return;
  wait_for(impl_->main, impl_->side);
  impl_->read_on_main.clear();
  impl_->read_on_side.insert(impl_->read_on_side.end(), tensors.begin(), tensors.end());
}

void SideStream::main_waits(std::initializer_list<at::Tensor> tensors) {
  if (!impl_) return;
  wait_for(impl_->side, impl_->main);
  impl_->read_on_side.clear();
  impl_->read_on_main.insert(impl_->read_on_main.end(), tensors.begin(), tensors.end());
}

SideStream::Scope::Scope(SideStream& s) : s(s) {
  if (s.impl_) s.impl_->guard.emplace(s.impl_->side);
}
SideStream::Scope::~Scope() {
  if (s.impl_) s.impl_->guard.reset();
}

#else  // CPU build: nothing to capture

struct SideStream::Impl {};
SideStream::SideStream(bool, std::initializer_list<at::Tensor>) {}
SideStream::~SideStream() = default;
void SideStream::wait_main(std::initializer_list<at::Tensor>) {}
void SideStream::main_waits(std::initializer_list<at::Tensor>) {}
SideStream::Scope::Scope(SideStream& s) : s(s) {}
SideStream::Scope::~Scope() = default;

struct BlockGraphs::Impl {};
BlockGraphs::BlockGraphs() : impl_(std::make_unique<Impl>()) {}
void BlockGraphs::run(bool, const std::vector<at::Tensor*>&, const std::vector<at::Tensor>&,
                      const std::function<void()>& blocks) const {
  blocks();
}
int64_t BlockGraphs::captured() const { return 0; }

#endif

BlockGraphs::~BlockGraphs() = default;
BlockGraphs::BlockGraphs(BlockGraphs&&) noexcept = default;
BlockGraphs& BlockGraphs::operator=(BlockGraphs&&) noexcept = default;

}  // namespace ditgen::nn
