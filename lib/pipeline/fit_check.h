#pragma once
// Whether a checkpoint's weights can fit, checked before any of them is allocated (so that a request that
// cannot fit ends at once with numbers, not minutes later with an allocator failure).
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>

#include "lib/comm/mesh.h"
#include "lib/pipeline/memory_limit.h"
#include "lib/pipeline/step_work.h"

namespace ditgen::pipeline {

struct WeightEstimate {
  std::map<std::string, int64_t> bytes;  // per component folder, on this rank's device, in the run dtype
  // What must fit at once: with the memory plan the text encoder and the transformer are never held
  // together, so the larger of (all but the transformer) and (all but the text encoder).
  int64_t total = 0;
  // --offload: the streamed blocks each component keeps in host memory (this rank's), and what must fit
  // in host memory at once (the larger of the two under the memory plan); empty and 0 without it.
  std::map<std::string, int64_t> host_bytes;
  int64_t host_total = 0;
};

// The block a checkpoint key belongs to ("transformer_blocks.3.", "single_transformer_blocks.0.",
// "language_model.model.layers.12."), or "" for a key outside the repeated blocks.
std::string block_of_key(const std::string& key);
// Whether --offload keeps this block key on the device: LTX-2's per-block modulation tables (a few KB each),
// which it stacks for all blocks so that a forward modulates every block at once.
bool stays_on_device(const std::string& key);

// The tensors of each component folder of a diffusers `model_path` (from the safetensors headers only),
// converted to `dtype`; the transformer divided over `tp` ranks and the text encoder over `text_ranks`;
// `fp8_transformer` (--fp8): the transformer's linears at one byte per weight. `offload_depth` > 0
// (--offload): the transformer's and the text encoder's blocks are counted in host memory, and on the
// device only the rest plus BlockStreamer::device_buffers(depth) of their largest block.
WeightEstimate estimate_weights(const std::string& model_path, int tp, int text_ranks, at::ScalarType dtype,
                                bool fp8_transformer = false, int offload_depth = 0);

// Refuses the run when this rank's weights exceed its `room` (available_room(device); on the CPU the host's
// available memory is shared by `ranks_on_host` ranks), or (--offload) its streamed blocks what the host has
// available for the `ranks_on_host` ranks, naming the numbers and the flags that shrink it.
void check_weights_fit(const WeightEstimate& w, const Room& room, int ranks_on_host);

// The activations one denoising step holds at its peak on one rank, estimated from the step's largest
// matrix product [M, K] x [K, N] (StepWork::gemm_shape, per call): its rows divided over the sequence ranks
// (ulysses x ring), its output columns over tp, and three times input plus output for what a block keeps
// alive around it (modulated input, fused projections, attention output, MLP activations, residual
// stream). 0 when the model does not count its work.
int64_t estimate_step_activations(const StepWork& work, const comm::MeshShape& mesh, at::ScalarType dtype);

// After the weights are loaded and before the first step: refuses the run when the step's activations
// exceed the rank's `room` (the host's shared by `ranks_on_host` ranks on the CPU), naming the numbers and
// the flags that shrink it.
void check_activations_fit(int64_t bytes, const Room& room, int ranks_on_host);
// Whether they fit (what check_activations_fit refuses otherwise).
bool activations_fit(int64_t bytes, const Room& room, int ranks_on_host);

}  // namespace ditgen::pipeline
