#pragma once
// Whether a checkpoint's weights can fit, checked before any of them is allocated (so that a request that
// cannot fit ends at once with numbers, not minutes later with an allocator failure).
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>

namespace ditgen::pipeline {

struct WeightEstimate {
  std::map<std::string, int64_t> bytes;  // per component folder, on this rank, in the run dtype
  // What must fit at once: with the memory plan the text encoder and the transformer are never held
  // together, so the larger of (all but the transformer) and (all but the text encoder).
  int64_t total = 0;
};

// The tensors of each component folder of a diffusers `model_path` (from the safetensors headers only),
// converted to `dtype`; the transformer divided over `tp` ranks and the text encoder over `text_ranks`.
WeightEstimate estimate_weights(const std::string& model_path, int tp, int text_ranks, at::ScalarType dtype);

// Refuses the run when this rank's weights exceed what its device has free (on the CPU: the host's
// available memory shared by `ranks_on_host` ranks), naming the numbers and the flags that shrink it.
void check_weights_fit(const WeightEstimate& w, const at::Device& device, int ranks_on_host);

// Bytes the device has free now (CUDA), or the host's MemAvailable (CPU); -1 when unknown. The
// environment variable DITGEN_TEST_AVAILABLE_BYTES overrides it (tests).
int64_t available_bytes(const at::Device& device);

}  // namespace ditgen::pipeline
