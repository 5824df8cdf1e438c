#include "lib/runtime/metrics.h"

#include <chrono>
#include <fstream>
#include <string>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#ifdef DITGEN_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#endif

namespace ditgen::runtime {

double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

namespace {
const double process_start = now_seconds();
}

double seconds_since_start() { return now_seconds() - process_start; }

void synchronize(const at::Device& device) {
#ifdef DITGEN_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#else
  (void)device;
#endif
}

namespace {
int64_t proc_status_kb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, key.size(), key) == 0) return std::stoll(line.substr(key.size() + 1)) * 1024;
  return 0;
}
}  // namespace

#ifdef DITGEN_CUDA
namespace {
// The caching allocator refuses questions about a device it has not set up yet ("Invalid device
// argument"): before the first allocation (e.g. resetting the peaks before the model loads), make one.
void touch_allocator(const at::Device& device) {
  static bool touched = false;
  if (!touched) (void)at::empty({1}, at::TensorOptions().device(device));
  touched = true;
}
}  // namespace
#endif

MemoryReading read_memory(const at::Device& device) {
  MemoryReading r;
  r.host_rss = proc_status_kb("VmRSS");
  r.host_rss_peak = proc_status_kb("VmHWM");
#ifdef DITGEN_CUDA
  if (device.is_cuda()) {
    using namespace c10::cuda::CUDACachingAllocator;
    touch_allocator(device);
    const auto stats = getDeviceStats(device.index());
    const size_t agg = 0;  // StatType::AGGREGATE (its namespace moved between LibTorch versions)
    r.device_allocated = stats.allocated_bytes[agg].current;
    r.device_allocated_peak = stats.allocated_bytes[agg].peak;
    r.device_reserved_peak = stats.reserved_bytes[agg].peak;
  }
#else
  (void)device;
#endif
  return r;
}

void reset_peaks(const at::Device& device) {
  std::ofstream("/proc/self/clear_refs") << "5";  // resets VmHWM; harmless where not allowed
#ifdef DITGEN_CUDA
  if (device.is_cuda()) {
    touch_allocator(device);
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
  }
#else
  (void)device;
#endif
}

void return_freed_memory(const at::Device& device) {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
#ifdef DITGEN_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#else
  (void)device;
#endif
}

DeviceMemory device_memory(const at::Device& device) {
  DeviceMemory m;
#ifdef DITGEN_CUDA
  if (device.is_cuda()) {
    touch_allocator(device);
    const c10::cuda::CUDAGuard guard(device.index());
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) == cudaSuccess) {
      m.free = static_cast<int64_t>(free);
      m.total = static_cast<int64_t>(total);
    }
    const size_t agg = 0;  // StatType::AGGREGATE, as in read_memory
    m.reserved = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index()).reserved_bytes[agg].current;
  }
#else
  (void)device;
#endif
  return m;
}

void cap_device_memory(const at::Device& device, double fraction) {
#ifdef DITGEN_CUDA
  if (device.is_cuda()) {
    touch_allocator(device);  // the allocator refuses a fraction for a device it has not set up
    c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, device.index());
  }
#else
  (void)device;
  (void)fraction;
#endif
}

void Stopwatch::restart() {
  synchronize(device_);
  start_ = now_seconds();
}

double Stopwatch::seconds() const {
  synchronize(device_);
  return now_seconds() - start_;
}

}  // namespace ditgen::runtime
