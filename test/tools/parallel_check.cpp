// Parallel-equivalence check, run under mpirun: a model's transformer under a mesh must equal the
// single-process run of our own code (relative error <= 1e-5 in fp32). Every rank computes the
// single-process reference itself, so no files are exchanged.
//
//   mpirun -np 4 ditgen_parallel_check --parallel usp --img-h 5 --img-w 7 --txt 13 --batch 2
//   mpirun -np 4 ditgen_parallel_check --model qwen-image --parallel ulysses_tp --txt 11
//   mpirun -np 8 ditgen_parallel_check --tp 8 --fixture ../shared/fixtures/models/flux2_transformer_b1_h6w8_t20
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "lib/comm/launch.h"
#include "lib/comm/mpi_communicator.h"
#include "lib/io/checkpoint.h"
#include "lib/io/json.h"
#include "lib/parallel/context.h"
#include "lib/pipeline/output.h"
#include "lib/runtime/embedded_configs.h"
#include "lib/runtime/error.h"
#include "lib/verify/case.h"
#include "lib/verify/compare.h"
#include "models/flux2/pipeline.h"
#include "models/flux2/transformer.h"
#include "models/qwen_image/transformer.h"

using namespace ditgen;

int main(int argc, char** argv) {
  const auto launch = comm::launch(&argc, &argv);
  CLI::App app{"A transformer: mesh run vs single-process run"};
  std::string preset, fixture, model = "flux2";
  int ulysses = 0, ring = 0, tp = 0;
  int64_t img_h = 5, img_w = 7, txt = 13, batch = 2;
  double tol = 1e-5;
  std::string device_name = "cpu", dtype_name = "fp32";
  int stall_rank = -1, die_rank = -1, truncate_rank = -1;
  double timeout_s = 120;
  app.add_option("--model", model, "flux2 or qwen-image");
  app.add_option("--parallel", preset);
  app.add_option("--ulysses", ulysses);
  app.add_option("--ring", ring);
  app.add_option("--tp", tp);
  app.add_option("--img-h", img_h, "image token rows");
  app.add_option("--img-w", img_w, "image token columns");
  app.add_option("--txt", txt, "text tokens");
  app.add_option("--batch", batch);
  app.add_option("--fixture", fixture, "a transformer case folder of --model instead of random inputs");
  app.add_option("--tolerance", tol);
  app.add_option("--device", device_name, "cpu (MPI backend) or cuda (NCCL backend)");
  app.add_option("--dtype", dtype_name, "fp32 or bf16");
  app.add_option("--stall-rank", stall_rank, "this rank stops before the mesh run (tests the collective timeout)");
  app.add_option("--comm-timeout", timeout_s, "seconds a collective may wait");
  app.add_option("--die-rank", die_rank, "this rank exits abruptly before the mesh run (a dead rank)");
  app.add_option("--truncate-rank", truncate_rank,
                 "this rank sends the next one a longer MPI message than it posted for (tests MPI error reporting)");
  CLI11_PARSE(app, argc, argv);

  int code = 0;
  try {
    const comm::MeshShape shape = comm::resolve_shape(preset, ulysses, ring, tp, 0, launch.world);
    const auto [device, dtype] = pipeline::resolve_device(device_name, dtype_name, launch.rank);
    auto world = comm::make_world(launch, device.is_cuda(), timeout_s);
    auto ctx = parallel::Context::create(world, shape);
    if (truncate_rank >= 0) {  // MPI itself fails (MPI_ERR_TRUNCATE): the error names the op and the reason
      const int next = (truncate_rank + 1) % launch.world;
      at::Tensor buf = at::zeros({2}, at::kInt);
      std::vector<MPI_Request> req(1, MPI_REQUEST_NULL);
      if (launch.rank == truncate_rank)
        comm::mpi_check(MPI_Isend(buf.data_ptr(), 2, MPI_INT, next, 99, MPI_COMM_WORLD, &req[0]), "MPI_Isend",
                        "test");
      if (launch.rank == next)
        comm::mpi_check(MPI_Irecv(buf.data_ptr(), 1, MPI_INT, truncate_rank, 99, MPI_COMM_WORLD, &req[0]),
                        "MPI_Irecv", "test");
      comm::mpi_wait(req, timeout_s, "test message on group world", {buf});
    }

    // Runs the model's transformer on one process and under the mesh: (reference, mesh output).
    std::pair<at::Tensor, at::Tensor> outs;
    std::string label;
    auto pause_or_die = [&] {
      if (launch.rank == stall_rank) sleep(static_cast<unsigned>(10 * timeout_s + 60));  // a stuck rank
      if (launch.rank == die_rank) std::_Exit(9);                                         // a dead one
    };
    if (!fixture.empty() && !io::dir_exists(fixture)) {
      spdlog::info("SKIP: fixture folder {} not found", fixture);
      comm::shutdown();
      return 77;
    }
    at::Generator gen = at::detail::createCPUGenerator(99);
    const int64_t n_img = img_h * img_w;
    if (model == "flux2") {
      flux2::TransformerConfig cfg;
      std::shared_ptr<nn::WeightSource> source;
      flux2::TransformerInput in;
      if (!fixture.empty()) {
        verify::Case c(fixture);
        cfg = flux2::TransformerConfig::from_json(c.config(), c.file("config.json"));
        source = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file("weights.safetensors")}));
        in.hidden_states = c.tensor("in.hidden_states");
        in.encoder_hidden_states = c.tensor("in.encoder_hidden_states");
        in.timestep = c.tensor("in.timestep");
        in.guidance = c.tensor("in.guidance");
        in.img_ids = c.tensor("in.img_ids");
        in.txt_ids = c.tensor("in.txt_ids");
        label = c.name();
      } else {
        const auto preset_json = io::parse_json(embedded_configs().at("flux2"), "configs/flux2.json");
        cfg = flux2::TransformerConfig::from_json(preset_json["tiny"]["transformer"], "tiny transformer");
        source = std::make_shared<nn::RandomSource>(1234);
        in.hidden_states = at::randn({batch, n_img, cfg.in_channels}, gen, at::kFloat);
        in.encoder_hidden_states = at::randn({batch, txt, cfg.joint_attention_dim}, gen, at::kFloat);
        in.timestep = at::full({batch}, 0.7, at::kFloat);
        in.guidance = at::full({batch}, 4.0, at::kFloat);
        in.img_ids = flux2::image_ids(img_h, img_w);
        in.txt_ids = flux2::text_ids(txt);
        label = fmt::format("flux2 random b{} img {}x{} txt {}", batch, img_h, img_w, txt);
      }
      flux2::Transformer single(cfg, nn::Weights(source, dtype, device), parallel::Context::single());
      outs.first = single.forward(in);
      flux2::Transformer meshed(cfg, nn::Weights(source, dtype, device), ctx);
      pause_or_die();
      outs.second = meshed.forward(in);
    } else if (model == "qwen-image") {
      qwen_image::TransformerConfig cfg;
      std::shared_ptr<nn::WeightSource> source;
      qwen_image::TransformerInput in;
      if (!fixture.empty()) {
        verify::Case c(fixture);
        cfg = qwen_image::TransformerConfig::from_json(c.config(), c.file("config.json"));
        source = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file("weights.safetensors")}));
        in.hidden_states = c.tensor("in.hidden_states");
        in.encoder_hidden_states = c.tensor("in.encoder_hidden_states");
        in.encoder_mask = c.tensor("in.encoder_hidden_states_mask");
        in.timestep = c.tensor("in.timestep");
        const auto shape = c.case_json()["scalars"]["img_shapes"][0].get<std::vector<int64_t>>();
        in.frames = shape.at(0);
        in.height = shape.at(1);
        in.width = shape.at(2);
        label = c.name();
      } else {
        const auto preset_json = io::parse_json(embedded_configs().at("qwen_image"), "configs/qwen_image.json");
        cfg = qwen_image::TransformerConfig::from_json(preset_json["tiny"]["transformer"], "tiny transformer");
        source = std::make_shared<nn::RandomSource>(1234);
        in.hidden_states = at::randn({batch, n_img, cfg.in_channels}, gen, at::kFloat);
        in.encoder_hidden_states = at::randn({batch, txt, cfg.joint_attention_dim}, gen, at::kFloat);
        // Padded text keys: the last item loses its second token and its last two (non-contiguous).
        in.encoder_mask = at::ones({batch, txt}, at::kLong);
        if (txt >= 4) {
          in.encoder_mask[batch - 1][1] = 0;
          in.encoder_mask[batch - 1][txt - 1] = 0;
          in.encoder_mask[batch - 1][txt - 2] = 0;
        }
        in.timestep = at::full({batch}, 0.7, at::kFloat);
        in.frames = 1;
        in.height = img_h;
        in.width = img_w;
        label = fmt::format("qwen-image random b{} img {}x{} txt {} (masked)", batch, img_h, img_w, txt);
      }
      qwen_image::Transformer single(cfg, nn::Weights(source, dtype, device), parallel::Context::single());
      outs.first = single.forward(in);
      qwen_image::Transformer meshed(cfg, nn::Weights(source, dtype, device), ctx);
      pause_or_die();
      outs.second = meshed.forward(in);
    } else {
      fail("--model must be flux2 or qwen-image, got '{}'", model);
    }
    const at::Tensor& ref = outs.first;
    const at::Tensor& out = outs.second;

    verify::Report report;
    report.case_name = fmt::format("{} [{}] {} {}", label, ctx->mesh().describe(), device.str(), c10::toString(dtype));
    verify::compare(report, "mesh_vs_single", out, ref, tol);
    // Every rank must agree; rank 0 prints.
    at::Tensor ok = at::tensor({report.ok() ? 1.0 : 0.0}, at::kDouble);
    ctx->world().all_reduce(ok, comm::ReduceOp::Sum);
    report.print();
    code = ok.item<double>() == launch.world ? 0 : 1;
  } catch (const std::exception& e) {
    spdlog::error(e.what());
    code = 2;
    if (launch.world > 1) comm::abort_job(code);
  }
  comm::shutdown();
  return code;
}
