#pragma once
// --profile DIR: LibTorch's profiler (Kineto) around one denoising step of each rank. Writes
// DIR/trace_rank{r}.json (Chrome trace: Perfetto and chrome://tracing open it) and DIR/profile_rank{r}.md
// (+ .json): time per kernel class (GEMM, attention, norm, elementwise, copy / cast, communication,
// other) and the 15 longest kernels with their counts. On a GPU the table counts device kernels; on the
// CPU build, operators' self time (an operator's time less the operators it called). Off, it costs nothing.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ditgen::runtime {

// One kernel (or CPU operator) occurrence.
struct ProfiledKernel {
  std::string name;
  double start_us = 0, duration_us = 0;  // duration: self time for CPU operators
  uint64_t thread = 0;
  bool device = false;  // a GPU kernel or copy (else a CPU operator)
};

// The class a kernel's name belongs to (GEMM, attention, norm, elementwise, copy / cast, communication,
// other), decided by its name as cuBLAS, cuDNN, flash-attention, NCCL and ATen name their kernels.
std::string kernel_class(const std::string& name);

// The table: per class the time and share, then the `top` longest kernels by total time with counts.
struct ProfileSummary {
  struct Row {
    std::string name;
    double total_us = 0;
    int64_t count = 0;
  };
  std::vector<Row> classes;  // every class, in a fixed order
  std::vector<Row> kernels;  // longest first
  double total_us = 0;
  bool device = false;  // device kernels (GPU) or CPU operators' self time
};
ProfileSummary summarize(const std::vector<ProfiledKernel>& kernels, bool device, size_t top = 15);
std::string summary_markdown(const ProfileSummary& s, const std::string& title);

class StepProfiler {
 public:
  // Off when `dir` is empty. `cuda`: also record the device's kernels.
  StepProfiler(std::string dir, int rank, bool cuda);
  ~StepProfiler();
  bool on() const { return !dir_.empty(); }
  // Starts recording (once: later calls do nothing after the first stop()).
  void start();
  // Stops, writes the trace and the table; returns the table ("" when off or not started).
  std::string stop(const std::string& title);

 private:
  std::string dir_;
  int rank_;
  bool cuda_;
  bool running_ = false, done_ = false;
};

}  // namespace ditgen::runtime
