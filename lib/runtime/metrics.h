#pragma once
// Wall-clock timing (device-synchronised) and memory readings: host RSS from /proc, device
// allocated/reserved peaks from the CUDA caching allocator (0 on CPU builds).
#include <ATen/ATen.h>

#include <cstdint>

namespace ditgen::runtime {

double now_seconds();
// Seconds since this process started (measured from static initialisation, before main).
double seconds_since_start();
// Waits for queued device work so that a stage's time includes its kernels.
void synchronize(const at::Device& device);

struct MemoryReading {
  int64_t host_rss = 0;             // bytes, now
  int64_t host_rss_peak = 0;        // bytes, VmHWM since start or the last reset
  int64_t device_allocated = 0;     // bytes held by tensors now
  int64_t device_allocated_peak = 0;
  int64_t device_reserved_peak = 0; // bytes the caching allocator held at most
};

MemoryReading read_memory(const at::Device& device);
// Resets the device peak counters (and the host peak where the kernel allows).
void reset_peaks(const at::Device& device);
// After a component's tensors are freed: gives the memory back (glibc's malloc_trim on the host, the CUDA
// caching allocator's unused blocks on the device) so that RSS and reserved memory show the release.
void return_freed_memory(const at::Device& device);

// The card's free and total bytes, and what this process's caching allocator has reserved on it now (CUDA);
// -1 each on the CPU.
struct DeviceMemory {
  int64_t free = -1, total = -1, reserved = -1;
};
DeviceMemory device_memory(const at::Device& device);
// Caps what this process's caching allocator may reserve on `device` at `fraction` of the card's total
// (LibTorch's per-process memory fraction; an allocation past it fails as out of memory).
void cap_device_memory(const at::Device& device, double fraction);

// Times one stage: synchronises the device at both ends.
class Stopwatch {
 public:
  explicit Stopwatch(const at::Device& device) : device_(device) { restart(); }
  void restart();
  double seconds() const;  // since restart, after synchronising

 private:
  at::Device device_;
  double start_ = 0;
};

}  // namespace ditgen::runtime
