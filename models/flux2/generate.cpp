// `ditgen flux2`: the run a user asks for, from defaults to the written PNG and report.

#include "lib/io/image.h"
#include "lib/io/json.h"
#include "lib/pipeline/output.h"
#include "lib/runtime/error.h"
#include "lib/runtime/log.h"
#include "lib/runtime/metrics.h"
#include "lib/runtime/progress.h"
#include "models/flux2/pipeline.h"

namespace ditgen::flux2 {

io::RunReport generate(const pipeline::GenerateRequest& req, std::shared_ptr<parallel::Context> ctx) {
  const auto& mesh = ctx->mesh();
  DITGEN_CHECK(mesh.shape().cfg == 1,
               "--cfg {}: FLUX.2 is guidance-distilled (one transformer call per step), so there is no second CFG "
               "branch to run in parallel; drop --cfg",
               mesh.shape().cfg);
  const auto [device, dtype] = pipeline::resolve_device(req.device, req.dtype, mesh.rank());

  // Load.
  LoadOptions lo;
  lo.model_path = req.model_path;
  lo.random_weights = req.random_weights;
  lo.weight_seed = req.weight_seed;
  lo.dtype = dtype;
  lo.device = device;
  lo.text_layers = req.text_encoder_out_layers;
  if (req.model_path.empty() && !req.random_weights)
    log::info("no --model-path: running the built-in tiny FLUX.2 (random weights, no files)");
  runtime::Stopwatch load_watch(device);
  Pipeline pipe(lo, ctx);
  const double load_s = load_watch.seconds();

  // Resolve the run's settings from the request and the preset.
  const auto& d = pipe.defaults();
  const int64_t height = req.height > 0 ? req.height : d["height"].get<int64_t>();
  const int64_t width = req.width > 0 ? req.width : d["width"].get<int64_t>();
  const int64_t steps = req.steps > 0 ? req.steps : d["steps"].get<int64_t>();
  const double guidance = req.guidance >= 0 ? req.guidance : d["guidance"].get<double>();
  const int64_t max_len = req.max_sequence_length > 0 ? req.max_sequence_length : d["max_sequence_length"].get<int64_t>();
  const std::string prompt = req.prompt.empty() ? d["prompt"].get<std::string>() : req.prompt;
  const int64_t m = pipe.pixel_multiple();
  pipeline::check_image_size(height, width, m);
  const int warmup_steps = req.warmup_steps > 0 ? req.warmup_steps : static_cast<int>(steps);

  io::RunReport report;
  report.model = pipe.name();
  report.device = pipeline::device_description(device, mesh.world());
  report.settings = {{"prompt", prompt},      {"height", height},           {"width", width},
                     {"steps", steps},        {"guidance", guidance},       {"seed", req.seed},
                     {"batch", req.batch},    {"max_sequence_length", max_len}, {"dtype", c10::toString(dtype)},
                     {"mesh", mesh.describe()}, {"warmup", req.warmup},     {"repeat", req.repeat}};
  report.add_stage("load", load_s);
  log::info("{}: {}x{}, {} steps, guidance {}, seed {}, {} on {} ({})", pipe.name(), width, height, steps, guidance,
            req.seed, c10::toString(dtype), report.device, mesh.describe());

  const std::vector<std::string> prompts(static_cast<size_t>(req.batch), prompt);
  auto run_once = [&](int64_t n_steps, bool timed) {
    runtime::Stopwatch sw(device);
    at::Tensor embeds = pipe.encode_prompts(prompts, max_len);
    const double te = sw.seconds();
    at::Tensor noise = pipe.initial_noise(req.batch, height, width, req.seed);
    runtime::Progress progress(timed ? "denoise" : "warmup", n_steps);
    auto result = pipe.denoise(embeds, noise, n_steps, guidance, [&](int64_t, double s) { progress.advance(s); });
    progress.finish();
    sw.restart();
    at::Tensor images = pipe.decode(result.latents, noise.size(2), noise.size(3));
    const double vae = sw.seconds();
    return std::make_tuple(te, result.step_seconds, vae, images);
  };

  if (req.track_memory) runtime::reset_peaks(device);
  for (int i = 0; i < req.warmup; ++i) run_once(warmup_steps, false);

  double te_sum = 0, vae_sum = 0, total_sum = 0;
  std::vector<double> steps_sum(static_cast<size_t>(steps), 0.0);
  at::Tensor images;
  for (int r = 0; r < std::max(1, req.repeat); ++r) {
    runtime::Stopwatch total(device);
    auto [te, step_s, vae, imgs] = run_once(steps, true);
    total_sum += total.seconds();
    te_sum += te;
    vae_sum += vae;
    for (size_t i = 0; i < step_s.size(); ++i) steps_sum[i] += step_s[i];
    images = imgs;
  }
  const double n = std::max(1, req.repeat);
  double denoise_s = 0;
  for (auto& s : steps_sum) denoise_s += (s /= n);
  report.add_stage("text_encode", te_sum / n);
  report.add_stage("denoise", denoise_s);
  report.add_stage("vae_decode", vae_sum / n);
  report.add_stage("inference", total_sum / n);
  report.step_seconds = steps_sum;

  // Write on rank 0 (every rank holds the same images).
  runtime::Stopwatch write_watch(device);
  const auto paths = pipeline::output_paths(req.output, pipe.name(), height, width, pipeline::run_tag(mesh, false),
                                            req.batch);
  if (mesh.rank() == 0)
    for (int64_t b = 0; b < req.batch; ++b) io::write_png(paths.images[b], images[b]);
  report.add_stage("write", write_watch.seconds());
  report.outputs = paths.images;

  io::RankStats mine;
  mine.rank = mesh.rank();
  mine.load_seconds = load_s;
  mine.bytes_transformer = pipe.bytes_read().at("transformer");
  mine.bytes_text_encoder = pipe.bytes_read().at("text_encoder");
  mine.bytes_vae = pipe.bytes_read().at("vae");
  mine.bytes_read = mine.bytes_transformer + mine.bytes_text_encoder + mine.bytes_vae;
  const auto mem = runtime::read_memory(device);
  mine.host_rss_peak = mem.host_rss_peak;
  mine.device_allocated_peak = mem.device_allocated_peak;
  mine.device_reserved_peak = mem.device_reserved_peak;
  report.ranks = io::gather_rank_stats(mine, ctx->world());

  if (mesh.rank() == 0) {
    io::write_file_atomic(paths.report, report.to_json().dump(2) + "\n");
    log::info_line(report.table());
    if (req.track_memory) {
      int64_t peak = 0;
      for (const auto& r : report.ranks) peak = std::max(peak, device.is_cuda() ? r.device_allocated_peak : r.host_rss_peak);
      log::info("Memory Usage: {:.2f}GiB ({} peak, max over ranks)", static_cast<double>(peak) / (1 << 30),
                device.is_cuda() ? "device allocated" : "host RSS");
    }
    for (const auto& p : paths.images) log::info("Image saved to {}", p);
    log::info("Report saved to {}", paths.report);
  }
  return report;
}

}  // namespace ditgen::flux2
