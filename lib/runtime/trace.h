#pragma once
// Parity tracing (cf. llama.cpp's cb(cur, "attn_norm", il)): models name their intermediates with
// trace("double.3.x", x); when tracing is on (--trace DIR) each rank keeps a CPU copy of the first
// occurrence of every name and writes them to DIR/trace_rank{r}.safetensors at the end, so that two
// runs (e.g. ours vs a reference, or two meshes) can be compared tensor by tensor with
// `ditgen trace-diff`. Off, a trace call costs one branch.
#include <ATen/ATen.h>

#include <string>

namespace ditgen::runtime {

void trace_enable(const std::string& dir);
bool trace_enabled();
void trace(const std::string& name, const at::Tensor& t);
// Writes this rank's traced tensors (no-op when tracing is off).
void trace_flush(int rank);

// Relative error of every tensor present in both files, one line each; returns the largest.
double trace_diff(const std::string& a, const std::string& b);

}  // namespace ditgen::runtime
