#pragma once
// What every stage of a run shares: an allocation failure named by its stage, and the stage's memory
// peaks per rank for --track-memory.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <new>
#include <string>
#include <vector>

#include "lib/io/report.h"
#include "lib/pipeline/settings_check.h"
#include "lib/runtime/error.h"

namespace ditgen::pipeline {

// The message of an out-of-memory in `stage` on `device` (`what`: the allocator's first line), naming the
// rank's --gpu-memory-limit cap when that is what ran out.
[[noreturn]] void fail_out_of_memory(const char* stage, const at::Device& device, const std::string& what);

// Runs one stage; an allocation failure comes back as a ditgen::Error naming the stage and the flags
// that shrink it, instead of an internal error with a C++ backtrace.
template <typename F>
auto in_stage(const char* stage, const at::Device& device, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    fail_out_of_memory(stage, device, "the host allocator failed");
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    if (is_out_of_memory(what)) fail_out_of_memory(stage, device, what);
    throw;
  }
}

// --track-memory: each stage's peaks per rank, the counters reset at the stage's start; a stage that
// runs several times (warm-up and timed runs) keeps its highest.
class StagePeaks {
 public:
  StagePeaks(const at::Device& device, bool on) : device_(device), on_(on) {}
  void begin() const;
  void end(const std::string& stage);
  const std::vector<io::StageMemory>& stages() const { return stages_; }

 private:
  at::Device device_;
  bool on_;
  std::vector<io::StageMemory> stages_;
};

}  // namespace ditgen::pipeline
