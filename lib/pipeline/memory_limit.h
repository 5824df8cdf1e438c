#pragma once
// What one rank may still allocate: the device's free memory and, on GPUs, the per-rank cap of
// --gpu-memory-limit GiB (or DITGEN_GPU_MEMORY_LIMIT) on this process's CUDA caching allocator. The cap lets
// ranks share one GPU in set parts, and a large card stand in for a small one (docs/memory.md); the fit
// checks and the out-of-memory messages count with it.
#include <c10/core/Device.h>

#include <cstdint>
#include <optional>
#include <string>

namespace ditgen::pipeline {

constexpr const char* kGpuMemoryLimitEnv = "DITGEN_GPU_MEMORY_LIMIT";

struct GpuMemoryLimit {
  enum class From { None, Flag, Env };
  double gib = 0;  // 0: no cap
  From from = From::None;
  bool set() const { return gib > 0; }
  int64_t bytes() const { return static_cast<int64_t>(gib * 1073741824.0); }
  const char* source() const { return from == From::Env ? kGpuMemoryLimitEnv : "--gpu-memory-limit"; }
  std::string describe() const;  // "the --gpu-memory-limit cap (39 GiB)"
};

// The cap of a run: the flag's value when given (the environment variable is then not read), else the
// environment variable's (unset or empty: no cap). Throws naming the source when the value is not a finite
// number > 0.
GpuMemoryLimit resolve_gpu_memory_limit(std::optional<double> flag, const char* env);

// Refuses a cap on the CPU, and one larger than the card's `total_bytes`, naming the source and the numbers.
void check_gpu_memory_limit(const GpuMemoryLimit& cap, const c10::Device& device, int64_t total_bytes);

// Checks `cap` and sets it on this process's caching allocator for `device`: to be called once the device is
// chosen and before any weight is loaded. No-op without a cap.
void apply_gpu_memory_limit(const GpuMemoryLimit& cap, const c10::Device& device);
// The cap this process applied (none before apply_gpu_memory_limit). Process-wide, as the allocator it caps.
const GpuMemoryLimit& applied_gpu_memory_limit();
// The applied cap when it, not the card, bounds what this rank may still allocate (after an out-of-memory:
// whether the cap is what ran out); none otherwise.
GpuMemoryLimit exhausted_gpu_memory_limit();

// What a rank may still allocate, and what bounds it.
struct Room {
  enum class Bound { Host, Gpu, Cap };
  int64_t bytes = -1;  // -1: unknown (nothing is checked)
  Bound bound = Bound::Host;
  GpuMemoryLimit cap;  // with Bound::Cap
  // "the GPU has only 3.00 GiB free", "the host has only 1.00 MiB available", "the --gpu-memory-limit cap
  // (39 GiB) leaves only 3.00 GiB"
  std::string describe() const;
  // The first remedy when the cap is the bound ("raise --gpu-memory-limit, or "), else "".
  std::string raise_cap() const;
};

// A GPU rank's room: the card's free bytes or, under `cap`, what the cap leaves next to the `reserved` bytes
// this process's allocator holds already, whichever is less (`card_free` < 0: unknown).
Room gpu_room(int64_t card_free, int64_t reserved, const GpuMemoryLimit& cap);

// The room on `device` now: the card's (with the applied cap) on a GPU, the host's MemAvailable on the CPU.
// The environment variable DITGEN_TEST_AVAILABLE_BYTES stands for the card's free or the host's available
// bytes (tests).
Room available_room(const c10::Device& device);

// What this rank may still allocate on `device`: available_room plus, on a GPU, the caching allocator's free
// blocks (-1: unknown). Kept tensors that only save work (LTX-2's text keys, Qwen-Image's modulation table)
// are made only where they take at most a quarter of it.
int64_t allocatable_bytes(const c10::Device& device);

}  // namespace ditgen::pipeline
