#pragma once
// What this binary was built with: `ditgen --version`.
#include <string>

namespace ditgen::runtime {

// One line per library: LibTorch, CUDA and NCCL (or "not built in"), the MPI library, FFmpeg.
std::string build_versions();

}  // namespace ditgen::runtime
