#include "lib/pipeline/stage.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "lib/runtime/metrics.h"

namespace ditgen::pipeline {

void fail_out_of_memory(const char* stage, const at::Device& device, const std::string& what) {
  fail("{}", out_of_memory_message(stage, device.str(), what, exhausted_gpu_memory_limit()));
}

void StagePeaks::begin() const {
  if (on_) runtime::reset_peaks(device_);
}

void StagePeaks::end(const std::string& stage) {
  if (!on_) return;
  const auto m = runtime::read_memory(device_);
  spdlog::debug("memory after {}: host RSS {} (stage peak {}), device allocated {} (stage peak {})", stage,
                io::human_bytes(static_cast<double>(m.host_rss)),
                io::human_bytes(static_cast<double>(m.host_rss_peak)),
                io::human_bytes(static_cast<double>(m.device_allocated)),
                io::human_bytes(static_cast<double>(m.device_allocated_peak)));
  auto it = std::find_if(stages_.begin(), stages_.end(),
                         [&](const io::StageMemory& x) { return x.stage == stage; });
  if (it == stages_.end()) it = stages_.insert(stages_.end(), io::StageMemory{stage});
  it->host_rss_peak = std::max(it->host_rss_peak, m.host_rss_peak);
  it->device_allocated_peak = std::max(it->device_allocated_peak, m.device_allocated_peak);
  it->device_reserved_peak = std::max(it->device_reserved_peak, m.device_reserved_peak);
}

}  // namespace ditgen::pipeline
