// FP8 against bf16 on the whole FLUX.2-dev transformer at its real size on one GPU: the same seeded
// random weights loaded twice (bf16, then --fp8 quantised as they load), one forward each on the same
// inputs; prints the output's relative error and cosine similarity against bf16, the median forward
// time of each, and the weights' memory. Needs ~100 GB of device memory at the real size.
//
//   ditgen_bench_fp8 [--height 1024] [--width 1024] [--txt 512] [--reps 5] [--layers N --single-layers M]
//                    [--json out.json]
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>

#include "lib/nn/linear.h"
#include "lib/parallel/context.h"
#include "lib/runtime/metrics.h"
#include "models/flux2/pipeline.h"
#include "models/flux2/transformer.h"

using namespace ditgen;

namespace {

template <typename F>
double median_seconds(const at::Device& dev, int reps, F&& fn) {
  fn();  // warm-up (cuDNN plans, allocator)
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    runtime::Stopwatch sw(dev);
    fn();
    t.push_back(sw.seconds());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  ditgen::nn::gemms_without_workspace();  // as ditgen runs its GEMMs
  CLI::App app{"FLUX.2 transformer: FP8 against bf16"};
  int64_t height = 1024, width = 1024, txt = 512, layers = -1, single_layers = -1;
  int reps = 5;
  std::string json_path;
  app.add_option("--height", height);
  app.add_option("--width", width);
  app.add_option("--txt", txt, "text tokens");
  app.add_option("--layers", layers, "double-stream blocks (default: the real 8)");
  app.add_option("--single-layers", single_layers, "single-stream blocks (default: the real 48)");
  app.add_option("--reps", reps);
  app.add_option("--json", json_path);
  CLI11_PARSE(app, argc, argv);

  const at::Device dev(at::kCUDA, 0);
  if (const std::string why = nn::fp8_unavailable_reason(dev); !why.empty()) {
    std::fprintf(stderr, "ditgen_bench_fp8: %s\n", why.c_str());
    return 2;
  }
  flux2::TransformerConfig cfg;  // FLUX.2-dev
  if (layers >= 0) cfg.num_layers = layers;
  if (single_layers >= 0) cfg.num_single_layers = single_layers;
  const int64_t N = (height / 16) * (width / 16);
  const auto opt = at::TensorOptions().dtype(at::kBFloat16).device(dev);
  at::manual_seed(7);
  flux2::TransformerInput in;
  in.hidden_states = at::randn({1, N, cfg.in_channels}, opt);
  in.encoder_hidden_states = at::randn({1, txt, cfg.joint_attention_dim}, opt);
  in.timestep = at::full({1}, 0.5, opt);
  in.guidance = at::full({1}, 4.0, at::TensorOptions().dtype(at::kFloat).device(dev));
  in.img_ids = flux2::image_ids(height / 16, width / 16).to(dev);
  in.txt_ids = flux2::text_ids(txt).to(dev);
  auto ctx = parallel::Context::single();

  nlohmann::json out;
  {
    // The fused SwiGLU + concatenation + quantisation against the same ops one by one: identical bits.
    const int64_t M = 4608, Da = cfg.inner_dim(), F = cfg.mlp_hidden();
    at::Tensor a = at::randn({1, M, Da}, opt), P = at::randn({1, M, 3 * Da + 2 * F}, opt);
    const at::Tensor gu = P.narrow(-1, 3 * Da, 2 * F);
    const nn::Linear l = nn::quantize_fp8(nn::Linear(at::randn({Da, Da + F}, opt) * 0.01));
    const at::Tensor fused = nn::swiglu_concat_linear(a, gu, l);
    const at::Tensor h = at::silu(gu.narrow(-1, 0, F)) * gu.narrow(-1, F, F);
    const at::Tensor plain = nn::linear(at::cat({a, h}, -1), l);
    const double diff = (fused.to(at::kFloat) - plain.to(at::kFloat)).abs().max().item<double>();
    const double t_fused = median_seconds(dev, reps * 4, [&] { nn::swiglu_concat_linear(a, gu, l); });
    const double t_plain = median_seconds(dev, reps * 4, [&] {
      nn::linear(at::cat({a, at::silu(gu.narrow(-1, 0, F)) * gu.narrow(-1, F, F)}, -1), l);
    });
    std::printf("swiglu+concat+fp8 fused vs unfused: max abs diff %.3e, %.3f ms vs %.3f ms\n", diff, t_fused * 1e3,
                t_plain * 1e3);
    out["swiglu_fused"] = {{"max_abs_diff", diff}, {"fused_s", t_fused}, {"unfused_s", t_plain}};
  }
  at::Tensor ref;
  for (const bool fp8 : {false, true}) {
    runtime::return_freed_memory(dev);
    const int64_t before = runtime::read_memory(dev).device_allocated;
    flux2::Transformer model(cfg, nn::Weights(std::make_shared<nn::RandomSource>(1), at::kBFloat16, dev), ctx, fp8);
    const int64_t weights = runtime::read_memory(dev).device_allocated - before;
    in.rope = model.rope(in.img_ids, in.txt_ids);
    at::Tensor y;
    const double s = median_seconds(dev, reps, [&] { y = model.forward(in); });
    const char* name = fp8 ? "fp8" : "bf16";
    out[name] = {{"forward_s", s}, {"weights_bytes", weights}};
    std::printf("%-5s forward %.4f s, weights %.2f GiB\n", name, s, static_cast<double>(weights) / (1 << 30));
    if (!fp8) {
      ref = y.to(at::kFloat);
      continue;
    }
    const at::Tensor a = y.to(at::kFloat);
    const double rel = ((a - ref).norm() / ref.norm()).item<double>();
    const double cos = (a.flatten() .dot(ref.flatten()) / (a.norm() * ref.norm())).item<double>();
    out["rel_error_vs_bf16"] = rel;
    out["cosine_vs_bf16"] = cos;
    out["speedup"] = out["bf16"]["forward_s"].get<double>() / s;
    std::printf("fp8 vs bf16: output rel error %.3e, cosine %.6f, speed-up %.2fx, weights %.2fx smaller\n", rel, cos,
                out["speedup"].get<double>(),
                out["bf16"]["weights_bytes"].get<double>() / out["fp8"]["weights_bytes"].get<double>());
  }
  out["config"] = {{"height", height}, {"width", width}, {"image_tokens", N}, {"text_tokens", txt},
                   {"double_blocks", cfg.num_layers}, {"single_blocks", cfg.num_single_layers}};
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  return 0;
}
