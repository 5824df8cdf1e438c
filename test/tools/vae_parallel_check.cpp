// VAE-P check, run under mpirun: a VAE decoder (or with --encode its encoder) split by image rows over the
// ranks (--parallel-vae) must equal the single-process decode (encode) of our own code (relative error
// <= 1e-5 in fp32) at any latent size, also row counts that do not divide by the ranks, fewer rows than
// ranks and (encode) images whose size is not a multiple of the VAE's factor. Every rank computes the
// single-process reference itself. With --memory it measures instead: each rank's peak resident memory
// during the decode (encode) alone (no reference run), to see the activations fall as 1/N.
//
//   mpirun -np 3 ditgen_vae_parallel_check --model flux2 --rows 7 --cols 5
//   mpirun -np 4 ditgen_vae_parallel_check --model ltx2 --rows 13 --cols 4 --frames 2 --padding zeros
//   mpirun -np 3 ditgen_vae_parallel_check --model qwen-image --encode --rows 7 --cols 4 --extra 3
//   mpirun -np 4 ditgen_vae_parallel_check --model flux2 --config real --rows 32 --cols 32 --memory
#include <CLI/CLI.hpp>
#include <malloc.h>
#include <spdlog/spdlog.h>

#include <functional>

#include "lib/comm/launch.h"
#include "lib/io/json.h"
#include "lib/io/safetensors.h"
#include "lib/nn/weights.h"
#include "lib/parallel/rows.h"
#include "lib/pipeline/output.h"
#include "lib/runtime/embedded_configs.h"
#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"
#include "lib/verify/compare.h"
#include "models/flux2/vae.h"
#include "models/ltx2/vae.h"
#include "models/qwen_image/vae.h"

using namespace ditgen;

namespace {

// The halo exchange alone: every band padded by fill_halo() (and with_halo() when split) must equal its
// rows of the whole image padded by LibTorch, bit for bit, for each padding mode and halos of 1 to 3 rows
// (wider than some bands). Returns the number of failures on this rank; rank 0 prints.
int check_halo(comm::Communicator& world, int64_t rows, int64_t cols) {
  at::Generator gen = at::detail::createCPUGenerator(11);
  const at::Tensor full = at::randn({2, 3, rows, cols}, gen, at::kFloat);
  const parallel::RowSplit split(&world, rows);
  int failures = 0;
  for (int64_t halo = 1; halo <= 3; ++halo) {
    for (const auto pad : {parallel::RowPad::Zeros, parallel::RowPad::Replicate, parallel::RowPad::Reflect}) {
      if (pad == parallel::RowPad::Reflect && rows <= halo) continue;
      const std::vector<int64_t> p = {0, 0, halo, halo};  // rows only
      const at::Tensor ref = pad == parallel::RowPad::Zeros       ? at::constant_pad_nd(full, p, 0)
                             : pad == parallel::RowPad::Replicate ? at::replication_pad2d(full, p)
                                                                  : at::reflection_pad2d(full, p);
      const char* name =
          pad == parallel::RowPad::Zeros ? "zeros" : (pad == parallel::RowPad::Replicate ? "replicate" : "reflect");
      bool ok = true;
      if (!split.idle()) {
        const at::Tensor band = split.slice(full, 2);
        const at::Tensor expected = ref.narrow(2, split.begin(), band.size(2) + 2 * halo);
        at::Tensor padded = at::empty(expected.sizes(), full.options());
        padded.narrow(2, halo, band.size(2)).copy_(band);
        split.fill_halo(padded, 2, halo, pad);
        ok = at::equal(padded, expected);
        if (split.split()) ok = ok && at::equal(split.with_halo(band.contiguous(), 2, halo, pad), expected);
      }
      at::Tensor bad = at::tensor({ok ? 0.0 : 1.0}, at::kDouble);
      world.all_reduce(bad, comm::ReduceOp::Sum);
      if (world.rank() == 0)
        fmt::print("{} halo {} {} rows {} over {} ranks: {}\n", bad.item<double>() == 0 ? "PASS" : "FAIL", halo, name,
                   rows, world.size(), bad.item<double>() == 0 ? "equal" : "differs on some rank");
      failures += ok ? 0 : 1;
    }
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  const auto launch = comm::launch(&argc, &argv);
  CLI::App app{"A VAE decode split by rows over the ranks vs the single-process decode"};
  std::string model = "flux2", config = "tiny", padding, device_name = "cpu", dtype_name = "fp32";
  int64_t rows = 7, cols = 5, frames = 2, batch = 1, extra = 0;
  double tol = 1e-5, timeout_s = 120;
  bool memory = false, encode = false;
  app.add_option("--model", model, "flux2, qwen-image or ltx2; halo: the halo exchange alone");
  app.add_option("--config", config, "tiny (the built-in tiny VAE) or real (the released model's VAE config)");
  app.add_option("--rows", rows, "latent rows (the split dimension)");
  app.add_option("--cols", cols, "latent columns");
  app.add_option("--frames", frames, "ltx2: latent frames (decode), pixel frames (encode: 1 + 4k for tiny)");
  app.add_flag("--encode", encode, "check the encoder: an image of rows x cols latents (+ --extra pixels)");
  app.add_option("--extra", extra,
                 "encode, flux2 and qwen-image: pixel rows and columns beyond the VAE factor");
  app.add_option("--batch", batch);
  app.add_option(
      "--padding", padding,
      "ltx2: decoder_spatial_padding_mode, with --encode encoder_spatial_padding_mode (reflect or zeros)");
  app.add_option("--tolerance", tol);
  app.add_option("--device", device_name, "cpu (MPI backend) or cuda (NCCL backend)");
  app.add_option("--dtype", dtype_name, "fp32 or bf16");
  app.add_option("--comm-timeout", timeout_s, "seconds a collective may wait");
  app.add_flag("--memory", memory, "measure each rank's peak memory of the split decode instead of checking it");
  CLI11_PARSE(app, argc, argv);

  // Large blocks straight from (and back to) the OS, so peak RSS follows the live tensors.
  if (memory) mallopt(M_MMAP_THRESHOLD, 64 * 1024);

  int code = 0;
  try {
    DITGEN_CHECK(config == "tiny" || config == "real", "--config must be tiny or real, got '{}'", config);
    const bool tiny = config == "tiny";
    const auto [device, dtype] = pipeline::resolve_device(device_name, dtype_name, launch.rank);
    auto world = comm::make_world(launch, device.is_cuda(), timeout_s);
    if (model == "halo") {
      at::Tensor bad = at::tensor({static_cast<double>(check_halo(*world, rows, cols))}, at::kDouble);
      world->all_reduce(bad, comm::ReduceOp::Sum);
      comm::shutdown();
      return bad.item<double>() == 0 ? 0 : 1;
    }
    const nn::Weights weights(std::make_shared<nn::RandomSource>(4321), dtype, device);
    at::Generator gen = at::detail::createCPUGenerator(7);

    // decode(ranks): the model's VAE decode (or encode), split over `ranks` (null: this process alone).
    std::function<at::Tensor(comm::Communicator*)> decode;
    std::string label;
    DITGEN_CHECK(extra == 0 || (encode && model != "ltx2"),
                 "--extra applies to --encode of flux2 or qwen-image");
    if (model == "flux2") {
      const auto j = io::parse_json(embedded_configs().at("flux2"), "configs/flux2.json");
      const auto cfg = tiny ? flux2::VaeConfig::from_json(j["tiny"]["vae"], "tiny vae") : flux2::VaeConfig{};
      auto vae = std::make_shared<flux2::Vae>(cfg, weights, /*with_encoder=*/encode);
      if (encode) {
        const int64_t sf = cfg.scale_factor();
        const at::Tensor x =
            at::rand({batch, cfg.in_channels, rows * sf + extra, cols * sf + extra}, gen) * 2 - 1;
        decode = [vae, x](comm::Communicator* ranks) { return vae->encode_mean(x, ranks); };
      } else {
        const at::Tensor z = at::randn({batch, cfg.latent_channels, rows, cols}, gen, at::kFloat);
        decode = [vae, z](comm::Communicator* ranks) { return vae->decode(z, ranks); };
      }
    } else if (model == "qwen-image") {
      const auto j = io::parse_json(embedded_configs().at("qwen_image"), "configs/qwen_image.json");
      const auto cfg = tiny ? qwen_image::VaeConfig::from_json(j["tiny"]["vae"], "tiny vae") : qwen_image::VaeConfig{};
      auto vae = std::make_shared<qwen_image::Vae>(cfg, weights, /*with_encoder=*/encode);
      if (encode) {
        const int64_t sf = cfg.scale_factor();
        const at::Tensor x = at::rand({batch, 3, 1, rows * sf + extra, cols * sf + extra}, gen) * 2 - 1;
        decode = [vae, x](comm::Communicator* ranks) {  // mean and std, one after the other along channels
          const auto post = vae->encode(x, ranks);
          return at::cat({post.mean, post.std}, 1);
        };
      } else {
        const at::Tensor z = at::randn({batch, cfg.z_dim, 1, rows, cols}, gen, at::kFloat);
        decode = [vae, z](comm::Communicator* ranks) { return vae->decode(z, ranks); };
      }
    } else if (model == "ltx2") {
      const auto j = io::parse_json(embedded_configs().at("ltx2"), "configs/ltx2.json");
      nlohmann::json vj = tiny ? j["tiny"]["vae"] : nlohmann::json::object();
      if (!padding.empty())
        vj[encode ? "encoder_spatial_padding_mode" : "decoder_spatial_padding_mode"] = padding;
      const auto cfg = ltx2::VideoVaeConfig::from_json(vj, "ltx2 vae");
      auto vae = std::make_shared<ltx2::VideoVae>(cfg, weights, /*with_encoder=*/encode);
      if (encode) {
        const int64_t er = cfg.encoder_spatial_ratio();
        const at::Tensor x = at::rand({batch, cfg.in_channels, frames, rows * er, cols * er}, gen) * 2 - 1;
        decode = [vae, x](comm::Communicator* ranks) { return vae->encode_mean(x, ranks); };
        label = fmt::format(" pixel f{} {}", frames, cfg.encoder_spatial_padding_mode);
      } else {
        const at::Tensor z = at::randn({batch, cfg.latent_channels, frames, rows, cols}, gen, at::kFloat);
        decode = [vae, z](comm::Communicator* ranks) { return vae->decode(z, ranks); };
        label = fmt::format(" f{} {}", frames, cfg.decoder_spatial_padding_mode);
      }
    } else {
      fail("--model must be flux2, qwen-image or ltx2, got '{}'", model);
    }
    label = fmt::format("{} {} vae {} b{} latent {}x{}{}{} over {} ranks", model, config,
                        encode ? "encode" : "decode", batch, rows, cols,
                        extra ? fmt::format(" +{} px", extra) : "", label, launch.world);

    if (memory) {
      runtime::reset_peaks(device);
      const int64_t before = runtime::read_memory(device).host_rss;
      runtime::Stopwatch watch(device);
      at::Tensor out = decode(world.get());
      const double seconds = watch.seconds();
      const int64_t peak = runtime::read_memory(device).host_rss_peak - before;
      at::Tensor mine = at::tensor({static_cast<double>(peak), seconds}, at::kDouble).view({1, 2});
      at::Tensor all = world->all_gather(mine, 0, std::vector<int64_t>(launch.world, 1));
      if (launch.rank == 0) {
        std::string per_rank;
        double worst = 0;
        for (int r = 0; r < launch.world; ++r) {
          const double mib = all[r][0].item<double>() / (1 << 20);
          worst = std::max(worst, mib);
          per_rank += fmt::format("{}{:.1f}", r ? ", " : "", mib);
        }
        fmt::print("MEMORY {} output {}: peak RSS per rank [{}] MiB, max {:.1f} MiB, {:.2f} s\n", label,
                   io::shape_str(out.sizes()), per_rank, worst, all[0][1].item<double>());
      }
    } else {
      const at::Tensor ref = decode(nullptr);
      const at::Tensor out = decode(world.get());
      verify::Report report;
      report.case_name = label;
      verify::compare(report, "split_vs_single", out, ref, tol);
      at::Tensor ok = at::tensor({report.ok() ? 1.0 : 0.0}, at::kDouble);
      world->all_reduce(ok, comm::ReduceOp::Sum);  // every rank must agree; rank 0 prints
      report.print();
      code = ok.item<double>() == launch.world ? 0 : 1;
    }
  } catch (const std::exception& e) {
    spdlog::error(e.what());
    code = 2;
    if (launch.world > 1) comm::abort_job(code);
  }
  comm::shutdown();
  return code;
}
