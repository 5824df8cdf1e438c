#include "lib/pipeline/memory_limit.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include "lib/io/report.h"
#include "lib/pipeline/settings_check.h"
#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"

namespace ditgen::pipeline {

namespace {

struct Applied {
  GpuMemoryLimit cap;
  c10::Device device = c10::kCPU;
};
Applied& applied() {
  static Applied a;
  return a;
}

// The host's MemAvailable, -1 when unknown.
int64_t host_available() {
  std::ifstream f("/proc/meminfo");
  std::string key, unit;
  int64_t kib = 0;
  while (f >> key >> kib >> unit)
    if (key == "MemAvailable:") return kib * 1024;
  return -1;
}

}  // namespace

std::string GpuMemoryLimit::describe() const { return fmt::format("the {} cap ({:g} GiB)", source(), gib); }

GpuMemoryLimit resolve_gpu_memory_limit(std::optional<double> flag, const char* env) {
  if (flag) {
    const std::string text = fmt::format("{}", *flag);
    const std::string fault = number_fault(text, 0, true, 1e5);
    DITGEN_CHECK(fault.empty(), "--gpu-memory-limit: {}", fault);
    return {*flag, GpuMemoryLimit::From::Flag};
  }
  if (!env || !*env) return {};
  const std::string fault = number_fault(env, 0, true, 1e5);
  DITGEN_CHECK(fault.empty(), "{}: {} (GiB of GPU memory per rank)", kGpuMemoryLimitEnv, fault);
  return {std::stod(env), GpuMemoryLimit::From::Env};
}

void check_gpu_memory_limit(const GpuMemoryLimit& cap, const c10::Device& device, int64_t total_bytes) {
  if (!cap.set()) return;
  DITGEN_CHECK(device.is_cuda(),
               "{} caps a GPU's memory; this run is on the CPU (--device cpu, a build without CUDA, or no "
               "GPU seen): {}",
               cap.source(), cap.from == GpuMemoryLimit::From::Flag ? "drop the flag" : "unset it");
  DITGEN_CHECK(total_bytes < 0 || cap.bytes() <= total_bytes,
               "{} {:g} (GiB) is more than the {} of {}: give at most {:.2f}", cap.source(), cap.gib,
               io::human_bytes(total_bytes), device.str(),
               std::floor(static_cast<double>(total_bytes) / 1073741824.0 * 100) / 100);
}

void apply_gpu_memory_limit(const GpuMemoryLimit& cap, const c10::Device& device) {
  if (!cap.set()) return;
  const runtime::DeviceMemory card = runtime::device_memory(device);
  check_gpu_memory_limit(cap, device, card.total);
  if (card.total > 0)
    runtime::cap_device_memory(device, static_cast<double>(cap.bytes()) / static_cast<double>(card.total));
  applied() = {cap, device};
  spdlog::info("{}: each rank's allocator may reserve {:g} GiB of {}'s {}", cap.source(), cap.gib,
               device.str(), io::human_bytes(card.total));
}

const GpuMemoryLimit& applied_gpu_memory_limit() { return applied().cap; }

GpuMemoryLimit exhausted_gpu_memory_limit() {
  if (!applied().cap.set()) return {};
  const Room room = available_room(applied().device);
  return room.bound == Room::Bound::Cap ? room.cap : GpuMemoryLimit{};
}

std::string Room::describe() const {
  switch (bound) {
    case Bound::Cap:
      return fmt::format("{} leaves only {}", cap.describe(), io::human_bytes(bytes));
    case Bound::Gpu:
      return fmt::format("the GPU has only {} free", io::human_bytes(bytes));
    case Bound::Host:
      break;
  }
  return fmt::format("the host has only {} available", io::human_bytes(bytes));
}

std::string Room::raise_cap() const {
  return bound == Bound::Cap ? fmt::format("raise {}, or ", cap.source()) : "";
}

Room gpu_room(int64_t card_free, int64_t reserved, const GpuMemoryLimit& cap) {
  Room r{card_free, Room::Bound::Gpu, {}};
  if (!cap.set()) return r;
  // The allocator refuses to reserve past the cap, whatever the card has free; what it reserved already
  // (cached blocks included) counts against it.
  const int64_t left = std::max<int64_t>(cap.bytes() - std::max<int64_t>(reserved, 0), 0);
  if (card_free < 0 || left < card_free) r = {left, Room::Bound::Cap, cap};
  return r;
}

Room available_room(const c10::Device& device) {
  // Test hook (cli.error.weights_do_not_fit): pretend the card or the host has this many bytes.
  const char* hook = std::getenv("DITGEN_TEST_AVAILABLE_BYTES");
  const int64_t pretend = hook ? std::atoll(hook) : -1;
  if (device.is_cuda()) {
    const runtime::DeviceMemory card = runtime::device_memory(device);
    return gpu_room(hook ? pretend : card.free, card.reserved, applied().cap);
  }
  return {hook ? pretend : host_available(), Room::Bound::Host, {}};
}

int64_t allocatable_bytes(const c10::Device& device) {
  int64_t bytes = available_room(device).bytes;
  if (device.is_cuda() && bytes >= 0)
    bytes += std::max<int64_t>(runtime::device_memory(device).reserved - runtime::read_memory(device).device_allocated, 0);
  return bytes;
}

}  // namespace ditgen::pipeline
