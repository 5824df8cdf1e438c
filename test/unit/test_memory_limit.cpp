// --gpu-memory-limit / DITGEN_GPU_MEMORY_LIMIT (issue 19): where the cap comes from, what is refused, and the
// fit-check arithmetic under it with injected card numbers (no GPU needed).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>

#include "lib/io/report.h"
#include "lib/pipeline/fit_check.h"
#include "lib/pipeline/memory_limit.h"
#include "lib/pipeline/settings_check.h"
#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"

using namespace ditgen;
using pipeline::GpuMemoryLimit;
using pipeline::Room;

namespace {

constexpr int64_t GiB = int64_t{1} << 30;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const c10::Device kGpu(c10::kCUDA, 0);
const GpuMemoryLimit kCap39{39, GpuMemoryLimit::From::Flag};

}  // namespace

TEST_CASE("gpu memory limit: the flag wins over the environment variable", "[memory_limit]") {
  using pipeline::resolve_gpu_memory_limit;
  const GpuMemoryLimit none = resolve_gpu_memory_limit(std::nullopt, nullptr);
  CHECK_FALSE(none.set());
  CHECK_FALSE(resolve_gpu_memory_limit(std::nullopt, "").set());  // an empty variable is an unset one

  const GpuMemoryLimit flag = resolve_gpu_memory_limit(39.5, nullptr);
  CHECK(flag.gib == 39.5);
  CHECK(flag.from == GpuMemoryLimit::From::Flag);
  CHECK(std::string(flag.source()) == "--gpu-memory-limit");
  CHECK(flag.bytes() == 39 * GiB + GiB / 2);

  const GpuMemoryLimit env = resolve_gpu_memory_limit(std::nullopt, "0.25");
  CHECK(env.gib == 0.25);
  CHECK(env.from == GpuMemoryLimit::From::Env);
  CHECK(std::string(env.source()) == "DITGEN_GPU_MEMORY_LIMIT");
  CHECK(env.bytes() == GiB / 4);

  // Both: the flag's value and name; the variable is not even read (a bad one does not matter).
  const GpuMemoryLimit both = resolve_gpu_memory_limit(20, "70");
  CHECK(both.gib == 20);
  CHECK(both.from == GpuMemoryLimit::From::Flag);
  CHECK(resolve_gpu_memory_limit(20, "lots").gib == 20);
}

TEST_CASE("gpu memory limit: values that are not a positive number are refused, naming the source",
          "[memory_limit]") {
  using pipeline::resolve_gpu_memory_limit;
  for (const char* bad : {"abc", "0", "-1", "nan", "inf", "1e400", "39GiB", "100001"})
    CHECK_THAT(error_of([&] { resolve_gpu_memory_limit(std::nullopt, bad); }),
               Catch::StartsWith("DITGEN_GPU_MEMORY_LIMIT: must be a finite number > 0") &&
                   Catch::Contains(std::string("got '") + bad + "'"));
  for (double bad : {0.0, -2.0, std::nan("")})
    CHECK_THAT(error_of([&] { resolve_gpu_memory_limit(bad, nullptr); }),
               Catch::StartsWith("--gpu-memory-limit: must be a finite number > 0"));
}

TEST_CASE("gpu memory limit: refused on the CPU, and above the card's total", "[memory_limit]") {
  using pipeline::check_gpu_memory_limit;
  CHECK(error_of([] {
          check_gpu_memory_limit({}, c10::Device(c10::kCPU), -1);
        }).empty());  // no cap: nothing to check
  CHECK_THAT(error_of([] { check_gpu_memory_limit(kCap39, c10::Device(c10::kCPU), -1); }),
             Catch::StartsWith("--gpu-memory-limit caps a GPU's memory; this run is on the CPU") &&
                 Catch::Contains("drop the flag"));
  CHECK_THAT(error_of([] {
               check_gpu_memory_limit({8, GpuMemoryLimit::From::Env}, c10::Device(c10::kCPU), -1);
             }),
             Catch::StartsWith("DITGEN_GPU_MEMORY_LIMIT caps a GPU's memory; this run is on the CPU") &&
                 Catch::Contains("unset it"));
  // An 80 GiB card takes 39 and 80, not 80.5.
  CHECK(error_of([] { check_gpu_memory_limit(kCap39, kGpu, 80 * GiB); }).empty());
  CHECK(error_of([] { check_gpu_memory_limit({80, GpuMemoryLimit::From::Flag}, kGpu, 80 * GiB); }).empty());
  CHECK_THAT(error_of([] {
               check_gpu_memory_limit({80.5, GpuMemoryLimit::From::Flag}, kGpu, 80 * GiB);
             }),
             Catch::Equals(
                 "--gpu-memory-limit 80.5 (GiB) is more than the 80.00 GiB of cuda:0: give at most 80.00"));
  // And on a CPU run nothing is applied: the refusal comes before any allocator is touched.
  CHECK_THAT(error_of([] { pipeline::apply_gpu_memory_limit(kCap39, c10::Device(c10::kCPU)); }),
             Catch::Contains("this run is on the CPU"));
  CHECK_FALSE(pipeline::applied_gpu_memory_limit().set());
}

TEST_CASE("gpu memory limit: a rank's room is the card's free bytes or what the cap leaves",
          "[memory_limit]") {
  using pipeline::gpu_room;
  // No cap: the card's free bytes.
  Room r = gpu_room(50 * GiB, 10 * GiB, {});
  CHECK(r.bytes == 50 * GiB);
  CHECK(r.bound == Room::Bound::Gpu);
  // The cap leaves less than the card has free: 39 - 30 reserved = 9 GiB.
  r = gpu_room(50 * GiB, 30 * GiB, kCap39);
  CHECK(r.bytes == 9 * GiB);
  CHECK(r.bound == Room::Bound::Cap);
  CHECK(r.cap.gib == 39);
  // The card (shared with another rank) has less free than the cap leaves: the card bounds it.
  r = gpu_room(5 * GiB, 0, kCap39);
  CHECK(r.bytes == 5 * GiB);
  CHECK(r.bound == Room::Bound::Gpu);
  // Reserved past the cap (cached blocks from before the cap): nothing is left, not a negative room.
  r = gpu_room(50 * GiB, 40 * GiB, kCap39);
  CHECK(r.bytes == 0);
  CHECK(r.bound == Room::Bound::Cap);
  // The card's free bytes unknown: the cap still bounds.
  r = gpu_room(-1, GiB, kCap39);
  CHECK(r.bytes == 38 * GiB);
  CHECK(r.bound == Room::Bound::Cap);
  CHECK(gpu_room(-1, 0, {}).bytes == -1);
}

TEST_CASE("gpu memory limit: the fit checks count with the cap and say so", "[memory_limit]") {
  pipeline::WeightEstimate w;
  w.bytes = {{"text_encoder", 8 * GiB}, {"transformer", 30 * GiB}};
  w.total = 30 * GiB;
  // 30 GiB of weights fit an 80 GiB card with 70 free...
  CHECK(error_of([&] { pipeline::check_weights_fit(w, pipeline::gpu_room(70 * GiB, 0, {}), 1); }).empty());
  CHECK(error_of([&] {
          pipeline::check_weights_fit(w, pipeline::gpu_room(70 * GiB, GiB, kCap39), 1);
        }).empty());
  // ...but not a 24 GiB cap, whatever the card has free.
  const GpuMemoryLimit cap24{24, GpuMemoryLimit::From::Flag};
  CHECK_THAT(error_of([&] { pipeline::check_weights_fit(w, pipeline::gpu_room(70 * GiB, 0, cap24), 4); }),
             Catch::Equals(
                 "the weights need about 30.00 GiB at once on each rank (text_encoder 8.00 GiB, transformer "
                 "30.00 GiB) but the --gpu-memory-limit cap (24 GiB) leaves only 24.00 GiB: raise "
                 "--gpu-memory-limit, or spread the transformer over more ranks (--tp), the text encoder "
                 "over all ranks (--parallel-text), or run in a smaller --dtype, or keep the blocks in host memory "
                 "(--offload)"));
  // Without the cap in the way the card is named, and GPU ranks do not split the card's free bytes.
  CHECK_THAT(error_of([&] { pipeline::check_weights_fit(w, pipeline::gpu_room(20 * GiB, 0, kCap39), 4); }),
             Catch::Contains("but the GPU has only 20.00 GiB free: spread the transformer"));

  // Activations after 30 GiB of weights under a 39 GiB cap: 9 GiB left.
  const Room after_load = pipeline::gpu_room(45 * GiB, 30 * GiB, {39, GpuMemoryLimit::From::Env});
  CHECK(error_of([&] { pipeline::check_activations_fit(9 * GiB, after_load, 1); }).empty());
  // (What the runner asks before it stacks the two CFG branches into one call of twice the activations.)
  CHECK(pipeline::activations_fit(9 * GiB, after_load, 1));
  CHECK_FALSE(pipeline::activations_fit(18 * GiB, after_load, 1));
  CHECK_THAT(
      error_of([&] { pipeline::check_activations_fit(10 * GiB, after_load, 1); }),
      Catch::StartsWith("a denoising step needs about 10.00 GiB of activations on each rank but the "
                        "DITGEN_GPU_MEMORY_LIMIT cap (39 GiB) leaves only 9.00 GiB once the weights are "
                        "loaded: raise DITGEN_GPU_MEMORY_LIMIT, or reduce --height/--width"));
  // The host's room is shared by the ranks on it, as before the cap existed.
  const Room host{3 * GiB, Room::Bound::Host, {}};
  CHECK(error_of([&] { pipeline::check_activations_fit(GiB, host, 3); }).empty());
  CHECK_THAT(
      error_of([&] { pipeline::check_activations_fit(GiB, host, 4); }),
      Catch::Contains("(4.00 GiB for the 4 ranks on this host) but the host has only 3.00 GiB available"));
}

TEST_CASE("gpu memory limit: an out-of-memory over the cap says so", "[memory_limit]") {
  const std::string what = "CUDA out of memory. Tried to allocate 2.00 GiB\nmore";
  CHECK_THAT(
      pipeline::out_of_memory_message("denoising", "cuda:0", what, kCap39),
      Catch::Equals(
          "out of memory while denoising on cuda:0 (CUDA out of memory. Tried to allocate 2.00 GiB): "
          "over the --gpu-memory-limit cap (39 GiB): raise it, or reduce --height/--width/--batch-count, "
          "or spread the model over more ranks (--tp, --ulysses, --ring)"));
  CHECK_THAT(pipeline::out_of_memory_message("denoising", "cuda:0", what),
             !Catch::Contains("cap") && Catch::Contains(": reduce --height"));
  // Without an applied cap, no out-of-memory is blamed on one.
  CHECK_FALSE(pipeline::exhausted_gpu_memory_limit().set());
}

TEST_CASE("gpu memory limit: a CPU rank's room is the host's", "[memory_limit]") {
  const runtime::DeviceMemory m = runtime::device_memory(c10::Device(c10::kCPU));
  CHECK(m.free == -1);
  CHECK(m.total == -1);
  ::setenv("DITGEN_TEST_AVAILABLE_BYTES", "1048576", 1);
  const Room r = pipeline::available_room(c10::Device(c10::kCPU));
  ::unsetenv("DITGEN_TEST_AVAILABLE_BYTES");
  CHECK(r.bytes == 1048576);
  CHECK(r.bound == Room::Bound::Host);
  CHECK(r.describe() == "the host has only 1.00 MiB available");
}

TEST_CASE("gpu memory limit: the printed report states the cap", "[memory_limit]") {
  io::RunReport report;
  report.model = "flux2";
  report.device = "NVIDIA H100 80GB HBM3 x 2";
  CHECK_THAT(report.table(), !Catch::Contains("capped"));
  report.settings["gpu_memory_limit"] = {{"gib", 39.5}, {"source", "DITGEN_GPU_MEMORY_LIMIT"}};
  CHECK_THAT(report.table(),
             Catch::Contains("GPU memory capped at 39.5 GiB per rank (DITGEN_GPU_MEMORY_LIMIT)"));
}
