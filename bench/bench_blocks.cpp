// Block-level benchmark of the FLUX.2 transformer at its real width on one device: measures the
// device ceilings (bf16 matrix product, memory copy), one double-stream and one single-stream block,
// and the ops inside them, each against its FLOP/byte floor. Prints a table and writes JSON.
//
//   ditgen_bench_blocks [--tokens 4608] [--txt 512] [--tp 1] [--reps 20] [--json out.json]
#include <CLI/CLI.hpp>

#include <cstdio>

#include <torch/version.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "bench/timing.h"
#include "lib/nn/linear.h"
#include "lib/nn/ops.h"
#include "lib/parallel/context.h"
#include "lib/runtime/metrics.h"
#include "models/flux2/pipeline.h"
#include "models/flux2/transformer.h"

using namespace ditgen;

using bench::time_it;  // median of `reps` device-synchronised runs (bench/timing.h)

int main(int argc, char** argv) {
  ditgen::nn::gemms_without_workspace();  // as ditgen runs its GEMMs
  CLI::App app{"FLUX.2 block benchmark"};
  int64_t tokens = 4608, txt = 512;
  int tp = 1, reps = 20;
  std::string json_path, device_name = "cuda";
  app.add_option("--tokens", tokens, "joint sequence length (image + text)");
  app.add_option("--txt", txt, "text tokens among them");
  app.add_option("--tp", tp, "simulate a TP shard: heads and MLP divided by this");
  app.add_option("--reps", reps);
  app.add_option("--json", json_path);
  app.add_option("--device", device_name);
  CLI11_PARSE(app, argc, argv);

  const at::Device dev = device_name == "cuda" ? at::Device(at::kCUDA, 0) : at::Device(at::kCPU);
  const at::ScalarType dt = dev.is_cuda() ? at::kBFloat16 : at::kFloat;
  const auto opt = at::TensorOptions().dtype(dt).device(dev);
  nlohmann::json out;
  std::vector<std::tuple<std::string, double, double, double>> rows;  // name, s, flop, bytes
  auto add = [&](const std::string& name, double s, double flop, double bytes) {
    rows.emplace_back(name, s, flop, bytes);
    out["rows"].push_back({{"name", name}, {"seconds", s}, {"flop", flop}, {"bytes", bytes}});
  };

  // Ceilings.
  {
    at::Tensor a = at::randn({8192, 8192}, opt), b = at::randn({8192, 8192}, opt);
    const double s = time_it(dev, reps, [&] { at::matmul(a, b); });
    add("ceiling: matmul 8192^3", s, 2.0 * 8192 * 8192 * 8192, 3.0 * 8192 * 8192 * 2);
    at::Tensor src = at::empty({int64_t{1} << 29}, at::TensorOptions().dtype(at::kByte).device(dev)), dst = at::empty_like(src);
    const double c = time_it(dev, reps, [&] { dst.copy_(src); });
    add("ceiling: copy 512 MiB", c, 0, 2.0 * (1 << 29));
  }
  const double peak_flops = std::get<2>(rows[0]) / std::get<1>(rows[0]);
  const double peak_bw = std::get<3>(rows[1]) / std::get<1>(rows[1]);

  flux2::TransformerConfig cfg;  // FLUX.2-dev dims
  cfg.num_layers = 1;
  cfg.num_single_layers = 1;
  cfg.num_attention_heads /= tp;  // one TP shard's heads and MLP, run on one device
  cfg.mlp_ratio = 3.0;
  const int64_t D = cfg.inner_dim(), F = cfg.mlp_hidden(), H = cfg.num_attention_heads, hd = cfg.attention_head_dim;
  const int64_t S = tokens, N = tokens - txt;
  auto ctx = parallel::Context::single();
  flux2::Transformer model(cfg, nn::Weights(std::make_shared<nn::RandomSource>(1), dt, dev), ctx);
  flux2::TransformerInput in;
  in.hidden_states = at::randn({1, N, cfg.in_channels}, opt);
  in.encoder_hidden_states = at::randn({1, txt, cfg.joint_attention_dim}, opt);
  in.timestep = at::full({1}, 0.5, opt);
  in.guidance = at::full({1}, 4.0, at::TensorOptions().dtype(at::kFloat).device(dev));
  int64_t side = static_cast<int64_t>(std::sqrt(static_cast<double>(N)));
  while (N % side) --side;  // an image grid of side x N/side tokens
  in.img_ids = flux2::image_ids(side, N / side).to(dev);
  in.txt_ids = flux2::text_ids(txt).to(dev);

  auto state = model.prepare(in);
  const double attn_flop = 4.0 * S * S * D;
  // A double block applies one stream's weights (q, k, v, out: 4 D^2; SwiGLU MLP: 3 D F) to each token.
  const double dbl_flop = 2.0 * S * (4.0 * D * D + 3.0 * D * F) + attn_flop;
  const double sgl_flop = 2.0 * S * (D * (3.0 * D + 2.0 * F) + (D + F) * D) + attn_flop;
  add("double block", time_it(dev, reps, [&] {
        auto s = state;
        model.run_double_blocks(s, 0, 1);
      }),
      dbl_flop, 0);
  model.join_streams(state);
  add("single block", time_it(dev, reps, [&] {
        auto s = state;
        model.run_single_blocks(s, 0, 1);
      }),
      sgl_flop, 0);
  add("prepare (embeddings, modulation, rope)", time_it(dev, reps, [&] { model.prepare(in); }), 0, 0);

  // Ops at the block's shapes.
  at::Tensor x = at::randn({1, S, D}, opt), wd = at::randn({D, D}, opt), wf = at::randn({2 * F, D}, opt),
             wo = at::randn({D, F}, opt), wq = at::randn({3 * D + 2 * F, D}, opt);
  at::Tensor xf = at::randn({1, S, F}, opt);
  add("linear S x D -> D", time_it(dev, reps, [&] { nn::linear(x, wd); }), 2.0 * S * D * D, 2.0 * (S * D * 2 + D * D));
  add("linear S x D -> 2F", time_it(dev, reps, [&] { nn::linear(x, wf); }), 2.0 * S * D * 2 * F,
      2.0 * (S * D + S * 2 * F + D * 2 * F));
  add("linear S x F -> D", time_it(dev, reps, [&] { nn::linear(xf, wo); }), 2.0 * S * F * D, 2.0 * (S * F + S * D + D * F));
  add("linear S x D -> 3D+2F", time_it(dev, reps, [&] { nn::linear(x, wq); }), 2.0 * S * D * (3 * D + 2 * F),
      2.0 * (S * D + S * (3 * D + 2 * F) + D * (3 * D + 2 * F)));
  at::Tensor q = at::randn({1, S, H, hd}, opt), k = at::randn({1, S, H, hd}, opt), v = at::randn({1, S, H, hd}, opt);
  add("attention S x S, H heads", time_it(dev, reps, [&] { nn::attention(q, k, v); }), attn_flop, 2.0 * 4 * S * D);
  add("attention + lse (ring)", time_it(dev, reps, [&] { nn::attention_with_lse(q, k, v); }), attn_flop, 2.0 * 4 * S * D);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  if (dev.is_cuda()) {
    // Each kernel on its own, twice in alternating order (cuDNN builds a plan per shape and flag set).
    const at::Tensor qt = q.transpose(1, 2), kt = k.transpose(1, 2), vt = v.transpose(1, 2);
    for (int round = 0; round < 2; ++round) {
      add("  kernel: SDPA's choice", time_it(dev, reps, [&] { at::scaled_dot_product_attention(qt, kt, vt); }),
          attn_flop, 2.0 * 4 * S * D);
      add("  kernel: cuDNN, no lse", time_it(dev, reps, [&] {
            at::_scaled_dot_product_cudnn_attention(qt, kt, vt, std::nullopt, false);
          }),
          attn_flop, 2.0 * 4 * S * D);
      add("  kernel: cuDNN with lse", time_it(dev, reps, [&] {
            at::_scaled_dot_product_cudnn_attention(qt, kt, vt, std::nullopt, true);
          }),
          attn_flop, 2.0 * 4 * S * D);
      add("  kernel: flash (lse)", time_it(dev, reps, [&] { at::_scaled_dot_product_flash_attention(qt, kt, vt); }),
          attn_flop, 2.0 * 4 * S * D);
      add("  kernel: efficient (lse)", time_it(dev, reps, [&] {
            at::_scaled_dot_product_efficient_attention(qt, kt, vt, std::nullopt, true);
          }),
          attn_flop, 2.0 * 4 * S * D);
    }
  }
#endif
  {
    // The fused kernels against fp32 arithmetic on the first 512 queries: output and log-sum-exp.
    const int64_t n = std::min<int64_t>(512, S);
    const at::Tensor qs = q.narrow(1, 0, n);
    const auto ref = nn::attention_with_lse(qs.to(at::kFloat), k.to(at::kFloat), v.to(at::kFloat));
    const auto got = nn::attention_with_lse(qs, k, v);
    const at::Tensor plain = nn::attention(qs, k, v);
    auto rel = [](const at::Tensor& a, const at::Tensor& b) {
      return ((a.to(at::kFloat) - b).norm() / b.norm()).item<double>();
    };
    std::printf("attention check vs fp32: output rel %.2e, with lse: output rel %.2e, lse max abs %.2e\n",
                rel(plain, ref.out), rel(got.out, ref.out), (got.lse - ref.lse).abs().max().item<double>());
  }
  at::Tensor cs = at::randn({S, hd}, at::TensorOptions().dtype(at::kFloat).device(dev));
  at::Tensor rope = nn::rope_pair_factors(cs, cs);
  add("rope interleaved (q)", time_it(dev, reps, [&] { nn::rope_interleaved(q, rope); }), 0, 2.0 * 2 * S * D + 4.0 * S * hd);
  at::Tensor w = at::randn({hd}, opt);
  {
    // The fused QK norm + RoPE kernel against the ATen composition, on fresh random data.
    at::Tensor fused = nn::qk_norm_rope(q, w, 1e-6, rope);
    at::Tensor plain = nn::rope_interleaved(nn::rms_norm(q, w, 1e-6), rope);
    const double err = ((fused.to(at::kFloat) - plain.to(at::kFloat)).norm() / plain.to(at::kFloat).norm()).item<double>();
    std::printf("qk_norm_rope fused vs ATen: rel %.2e\n", err);
    out["qk_norm_rope_rel_err"] = err;
  }
  add("qk norm + rope (fused on CUDA)", time_it(dev, reps, [&] { nn::qk_norm_rope(q, w, 1e-6, rope); }), 0, 2.0 * 2 * S * D);
  add("rms_norm per head (q)", time_it(dev, reps, [&] { nn::rms_norm(q, w, 1e-6); }), 0, 2.0 * 2 * S * D);
  at::Tensor sc = at::randn({1, 1, D}, opt), sh = at::randn({1, 1, D}, opt);
  {
    at::Tensor fused = nn::layer_norm_modulate(x, sc, sh, 1e-6);
    at::Tensor plain = at::addcmul(sh, nn::layer_norm(x, 1e-6), sc);
    const double err = ((fused.to(at::kFloat) - plain.to(at::kFloat)).norm() / plain.to(at::kFloat).norm()).item<double>();
    std::printf("layer_norm_modulate fused vs ATen: rel %.2e\n", err);
    out["layer_norm_modulate_rel_err"] = err;
  }
  add("layer_norm_modulate (fused on CUDA)", time_it(dev, reps, [&] { nn::layer_norm_modulate(x, sc, sh, 1e-6); }), 0,
      2.0 * 2 * S * D);
  add("shift + layer_norm * scale1 (addcmul)", time_it(dev, reps, [&] { at::addcmul(sh, nn::layer_norm(x, 1e-6), sc); }), 0,
      2.0 * 2 * S * D);
  add("gated residual x + g * y (addcmul)", time_it(dev, reps, [&] { at::addcmul(x, sc, x); }), 0, 2.0 * 3 * S * D);
  add("swiglu silu(a) * b", time_it(dev, reps, [&] { at::silu(xf) * xf; }), 0, 2.0 * 3 * S * F);

  std::printf("%-40s %10s %12s %10s\n", "what", "ms", "floor ms", "x floor");
  for (const auto& [name, s, flop, bytes] : rows) {
    const double floor = std::max(flop / peak_flops, bytes / peak_bw);
    std::printf("%-40s %10.3f %12.3f %10.2f\n", name.c_str(), s * 1e3, floor * 1e3, floor > 0 ? s / floor : 0.0);
  }
  std::printf("peak: %.0f TFLOP/s bf16 matmul, %.0f GB/s copy (read + write); S=%lld D=%lld F=%lld heads=%lld\n",
              peak_flops / 1e12, peak_bw / 1e9, (long long)S, (long long)D, (long long)F, (long long)H);
  out["peak_tflops"] = peak_flops / 1e12;
  out["peak_gbps"] = peak_bw / 1e9;
  out["tokens"] = S;
  out["tp"] = tp;
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
  return 0;
}
