// The floor probe of the benchmark sweeps (scripts/bench_sweep.sh): this card's matmul and attention
// rates at given shapes, measured now, so that a run's per-step time can be set against the time its
// FLOPs (the report's "work_per_step") would take at those rates. Prints a table and writes JSON.
//
//   ditgen_bench_floor --matmul M,K,N [--matmul ...] --attention B,H,S,D[,SK] [--attention ...]
//                      [--dtype auto|bf16|fp16|fp32|fp8] [--device auto|cuda|cpu] [--reps 10] [--json out.json]
//
// A matmul is x [M, K] times a weight [N, K] (as nn::linear; 2 M K N FLOPs); an attention is q [B, S, H, D]
// against S (or SK) keys through nn::attention, the kernel the models run (4 B H S SK D FLOPs). The
// rate is the median of --reps device-synchronised runs after 3 warm-ups. --dtype fp8 runs the matmuls as
// at::_scaled_mm on e4m3 operands with fp32 row / column scales (bf16 output; CUDA build, FP8 tensor
// cores) and the attention in bf16, as the models' --fp8 does.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench/timing.h"
#include "lib/nn/linear.h"
#include "lib/nn/ops.h"
#include "lib/pipeline/output.h"
#include "lib/runtime/error.h"

using namespace ditgen;

namespace {

// "4608,6144,36864" -> {4608, 6144, 36864}; `n_min`..`n_max` positive integers.
std::vector<int64_t> parse_shape(const std::string& flag, const std::string& text, size_t n_min, size_t n_max,
                                 const char* form) {
  std::vector<int64_t> v;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, ',')) {
    size_t used = 0;
    long long x = 0;
    try {
      x = std::stoll(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    DITGEN_CHECK(used == part.size() && !part.empty() && x > 0, "{} '{}': '{}' is not a positive integer (expected {})",
                 flag, text, part, form);
    v.push_back(x);
  }
  DITGEN_CHECK(v.size() >= n_min && v.size() <= n_max, "{} '{}': expected {}", flag, text, form);
  return v;
}

at::ScalarType parse_dtype(const std::string& d) {
  if (d == "bf16") return at::kBFloat16;
  if (d == "fp16") return at::kHalf;
  if (d == "fp32") return at::kFloat;
  fail("--dtype '{}': choose auto, bf16, fp16, fp32 or fp8", d);
}

std::string dtype_name(at::ScalarType t) { return t == at::kBFloat16 ? "bf16" : t == at::kHalf ? "fp16" : "fp32"; }

}  // namespace

int main(int argc, char** argv) {
  ditgen::nn::gemms_without_workspace();  // as ditgen runs its GEMMs
  CLI::App app{"ditgen_bench_floor: matmul and attention rates of this device at given shapes"};
  std::vector<std::string> matmuls, attentions;
  std::string dtype_arg = "auto", device_arg = "auto", json_path, backend = "auto";
  int reps = 10;
  app.add_option("--matmul", matmuls, "M,K,N: x [M, K] times a weight [N, K] (repeatable)")->take_all();
  app.add_option("--attention", attentions, "B,H,S,D or B,H,S,D,SK: S queries against S (or SK) keys (repeatable)")
      ->take_all();
  app.add_option("--dtype", dtype_arg, "auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32 or fp8 (matmuls on FP8 "
                                       "tensor cores, attention in bf16)")
      ->capture_default_str();
  app.add_option("--device", device_arg, "auto, cuda or cpu")->capture_default_str()
      ->check(CLI::IsMember({"auto", "cuda", "cpu"}));
  app.add_option("--reps", reps, "timed runs per shape (the median counts)")->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--attention-backend", backend,
                 "GPU attention kernel: auto, flash, sdpa or fp8 (as ditgen --attention; fp8 also reports its relative "
                 "RMS error against auto)")
      ->capture_default_str()->check(CLI::IsMember({"auto", "flash", "sdpa", "fp8"}));
  app.add_option("--json", json_path, "also write the results here");
  CLI11_PARSE(app, argc, argv);

  try {
    DITGEN_CHECK(!matmuls.empty() || !attentions.empty(), "nothing to measure: give --matmul M,K,N and/or --attention "
                                                          "B,H,S,D");
    const bool cuda = device_arg == "cuda" || (device_arg == "auto" && at::hasCUDA());
    DITGEN_CHECK(!cuda || at::hasCUDA(), "--device cuda: no CUDA device is visible to this build");
    const at::Device dev = cuda ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
    const bool fp8 = dtype_arg == "fp8";
    if (fp8) {
      DITGEN_CHECK(dev.is_cuda(),
                   "--dtype fp8 measures at::_scaled_mm on the GPU's FP8 tensor cores: it needs --device cuda (the "
                   "CPU has no FP8 matmul); use --dtype fp32 or bf16 here");
      const std::string why = nn::fp8_unavailable_reason(dev);
      DITGEN_CHECK(why.empty(), "--dtype fp8: {}", why);
    }
    const at::ScalarType dt = fp8 || dtype_arg == "auto" ? (dev.is_cuda() ? at::kBFloat16 : at::kFloat)
                                                          : parse_dtype(dtype_arg);
    const nn::AttentionBackend attention_backend = backend == "flash"  ? nn::AttentionBackend::Flash
                                                   : backend == "sdpa" ? nn::AttentionBackend::Sdpa
                                                   : backend == "fp8"  ? nn::AttentionBackend::Fp8
                                                                       : nn::AttentionBackend::Auto;
    nn::set_attention_backend(attention_backend);
    const auto opt = at::TensorOptions().dtype(dt).device(dev);
    const std::string device_name = pipeline::device_description(dev, 1);
    nlohmann::json out = {{"device", device_name},
                          {"dtype", fp8 ? "fp8" : dtype_name(dt)},
                          {"attention_dtype", dtype_name(dt)},
                          {"reps", reps},
                          {"matmul", nlohmann::json::array()},
                          {"attention", nlohmann::json::array()}};
    std::printf("floor probe on %s (%s, median of %d)\n", device_name.c_str(), fp8 ? "fp8" : dtype_name(dt).c_str(),
                reps);
    std::printf("| op | shape | ms | TFLOP/s |\n|---|---|---|---|\n");

    for (const auto& spec : matmuls) {
      const auto s = parse_shape("--matmul", spec, 3, 3, "M,K,N");
      const int64_t M = s[0], K = s[1], N = s[2];
      const double flop = 2.0 * M * K * N;
      double sec = 0;
      if (fp8) {
#ifdef DITGEN_CUDA
        DITGEN_CHECK(K % 16 == 0 && N % 16 == 0, "--matmul {}: the FP8 GEMM needs K and N multiples of 16", spec);
        const at::Tensor a8 = at::randn({M, K}, opt).to(at::kFloat8_e4m3fn);
        const at::Tensor b8 = at::randn({N, K}, opt).to(at::kFloat8_e4m3fn);  // passed as column-major [K, N]
        const at::Tensor sa = at::rand({M, 1}, opt.dtype(at::kFloat)) + 0.5;
        const at::Tensor sb = at::rand({1, N}, opt.dtype(at::kFloat)) + 0.5;
        sec = bench::time_it(dev, reps, [&] {
          at::_scaled_mm(a8, b8.t(), sa, sb, std::nullopt, std::nullopt, at::kBFloat16);
        });
#endif
      } else {
        const at::Tensor x = at::randn({M, K}, opt), w = at::randn({N, K}, opt);
        sec = bench::time_it(dev, reps, [&] { nn::linear(x, w); });
      }
      const double tflops = flop / sec / 1e12;
      std::printf("| matmul | %s | %.4f | %.2f |\n", spec.c_str(), sec * 1e3, tflops);
      out["matmul"].push_back({{"shape", {M, K, N}}, {"flop", flop}, {"seconds", sec}, {"tflops", tflops}});
    }
    for (const auto& spec : attentions) {
      const auto s = parse_shape("--attention", spec, 4, 5, "B,H,S,D or B,H,S,D,SK");
      const int64_t B = s[0], H = s[1], S = s[2], D = s[3], SK = s.size() == 5 ? s[4] : S;
      const double flop = 4.0 * B * H * S * SK * D;
      const at::Tensor q = at::randn({B, S, H, D}, opt), k = at::randn({B, SK, H, D}, opt),
                       v = at::randn({B, SK, H, D}, opt);
      const double sec = bench::time_it(dev, reps, [&] { nn::attention(q, k, v); });
      const double tflops = flop / sec / 1e12;
      nlohmann::json row = {{"shape", {B, H, S, D}}, {"flop", flop}, {"seconds", sec}, {"tflops", tflops}};
      std::string error_note;
      if (attention_backend == nn::AttentionBackend::Fp8) {
        // Against the default kernel on the same inputs: what FP8's rounding costs at this shape.
        const at::Tensor fast = nn::attention(q, k, v).to(at::kFloat);
        nn::set_attention_backend(nn::AttentionBackend::Auto);
        const at::Tensor ref = nn::attention(q, k, v).to(at::kFloat);
        nn::set_attention_backend(attention_backend);
        const double err = (fast - ref).pow(2).mean().sqrt().item<double>() / ref.pow(2).mean().sqrt().item<double>();
        row["relative_rms_error_vs_auto"] = err;
        error_note = fmt::format(" (relative RMS error vs auto {:.4f})", err);
      }
      std::printf("| attention | %s | %.4f | %.2f |%s\n", spec.c_str(), sec * 1e3, tflops, error_note.c_str());
      if (SK != S) row["keys"] = SK;
      out["attention"].push_back(row);
    }
    if (!json_path.empty()) {
      std::ofstream f(json_path);
      DITGEN_CHECK(f.good(), "--json {}: cannot write the file", json_path);
      f << out.dump(2) << "\n";
      DITGEN_CHECK(f.good(), "--json {}: writing failed", json_path);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ditgen_bench_floor: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
