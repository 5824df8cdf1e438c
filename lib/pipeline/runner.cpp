#include "lib/pipeline/runner.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>

#include "lib/io/image.h"
#include "lib/io/json.h"
#include "lib/io/output_files.h"
#include "lib/io/video.h"
#include "lib/nn/linear.h"
#include "lib/pipeline/fit_check.h"
#include "lib/pipeline/output.h"
#include "lib/pipeline/prompt_file.h"
#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"
#include "lib/runtime/progress.h"
#include "lib/runtime/trace.h"

namespace ditgen::pipeline {

Settings resolve_settings(const GenerateRequest& req, const Model& model, const at::Device& device,
                          at::ScalarType dtype) {
  const nlohmann::json& d = model.defaults();
  auto preset = [&](const char* key) -> const nlohmann::json& {
    DITGEN_CHECK(d.contains(key), "{}: the model presets have no default '{}'", model.name(), key);
    return d.at(key);
  };
  Settings s;
  s.prompt = req.prompt ? *req.prompt : preset("prompt").get<std::string>();
  if (req.negative_prompt) {
    s.negative_prompt = *req.negative_prompt;
    s.has_negative_prompt = true;
  } else if (d.contains("negative_prompt")) {
    s.negative_prompt = d.at("negative_prompt").get<std::string>();
    s.has_negative_prompt = true;
  }
  s.height = req.height > 0 ? req.height : preset("height").get<int64_t>();
  s.width = req.width > 0 ? req.width : preset("width").get<int64_t>();
  s.steps = req.steps > 0 ? req.steps : preset("steps").get<int64_t>();
  s.max_sequence_length =
      req.max_sequence_length > 0 ? req.max_sequence_length : preset("max_sequence_length").get<int64_t>();
  s.guidance = req.guidance >= 0 ? req.guidance : d.value("guidance", 0.0);
  s.true_cfg_scale = req.true_cfg_scale >= 0 ? req.true_cfg_scale : d.value("true_cfg_scale", 1.0);
  s.audio_guidance = req.audio_guidance >= 0 ? req.audio_guidance : s.guidance;  // the audio follows the video
  s.num_frames = req.num_frames > 0 ? req.num_frames : d.value("num_frames", int64_t{1});
  s.frame_rate = req.frame_rate > 0 ? req.frame_rate : d.value("frame_rate", 0.0);
  s.batch = req.batch;
  s.seed = req.seed;
  s.allow_nonfinite = req.allow_nonfinite;
  s.cache = req.cache;
  s.dtype = dtype;
  s.device = device;
  return s;
}

Branches encode_branches(const Model& model, const Settings& s, const parallel::Context& ctx, bool text_on_all_ranks) {
  const std::vector<std::string> prompts(static_cast<size_t>(s.batch), s.prompt);
  Branches b;
  if (!model.cfg_off_reason(s).empty()) {
    b.cond = model.encode(prompts, s);
    return b;
  }
  const std::vector<std::string> negatives(static_cast<size_t>(s.batch), s.negative_prompt);
  const auto& mesh = ctx.mesh();
  const bool both = mesh.shape().cfg == 1 || text_on_all_ranks;
  if (both || mesh.cfg_index() == 0) b.cond = model.encode(prompts, s);
  if (both || mesh.cfg_index() == 1) b.uncond = model.encode(negatives, s);
  if (mesh.shape().cfg == 2) (mesh.cfg_index() == 0 ? b.uncond : b.cond).reset();  // the other half's
  return b;
}

namespace {

// Under --cfg 2: this half's velocities in, (conditional, unconditional) out, with one all-gather of
// every stream flattened into one buffer.
std::pair<Latents, Latents> exchange_branches(const Latents& mine, const parallel::Context& ctx) {
  std::vector<at::Tensor> flat;
  for (const auto& t : mine) flat.push_back(t.reshape({-1}));
  at::Tensor buf = at::cat(flat, 0).contiguous();
  const int64_t n = buf.numel();
  at::Tensor both = ctx.cfg().all_gather(buf, 0, {n, n});  // [cond | uncond]
  std::pair<Latents, Latents> out;
  int64_t offset = 0;
  for (const auto& t : mine) {
    out.first.push_back(both.narrow(0, offset, t.numel()).view(t.sizes()));
    out.second.push_back(both.narrow(0, n + offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
  return out;
}

}  // namespace

DenoiseResult denoise(const Model& model, const Settings& s, const Branches& b, Latents latents,
                      const parallel::Context& ctx, const StepCallback& on_step) {
  DenoiseResult r;
  r.schedule = model.schedule(s);
  const bool cfg = model.cfg_off_reason(s).empty();
  const bool split = ctx.mesh().shape().cfg == 2;
  DITGEN_CHECK(!split || cfg, "--cfg 2 needs classifier-free guidance: {}", model.cfg_off_reason(s));
  const int64_t steps = static_cast<int64_t>(r.schedule.timesteps.size());
  // Whether every latent is finite after each step, kept on the device: one host read after the loop.
  std::vector<at::Tensor> finite;
  for (int64_t i = 0; i < steps; ++i) {
    runtime::Stopwatch sw(s.device);
    model.on_step(i, steps);
    const float t = r.schedule.timesteps[i];
    Latents v;
    if (!cfg) {
      v = model.predict(latents, t, *b.cond, 0, s);
    } else if (split) {
      const int me = ctx.mesh().cfg_index();
      const auto both = exchange_branches(model.predict(latents, t, me == 0 ? *b.cond : *b.uncond, me, s), ctx);
      v = model.guide(both.first, both.second, s);
    } else {
      const Latents vc = model.predict(latents, t, *b.cond, 0, s);
      v = model.guide(vc, model.predict(latents, t, *b.uncond, 1, s), s);
    }
    const double dsigma = static_cast<double>(r.schedule.sigmas[i + 1] - r.schedule.sigmas[i]);
    for (size_t k = 0; k < latents.size(); ++k)
      latents[k] = (latents[k].to(at::kFloat) + v[k].mul(dsigma)).to(latents[k].scalar_type());
    if (!s.allow_nonfinite) {
      at::Tensor ok = at::isfinite(latents[0]).all();
      for (size_t k = 1; k < latents.size(); ++k) ok = ok.logical_and(at::isfinite(latents[k]).all());
      finite.push_back(ok);
    }
    const double sec = sw.seconds();
    r.step_seconds.push_back(sec);
    if (on_step) on_step(i, sec);
  }
  for (size_t k = 0; k < latents.size(); ++k)
    runtime::trace(k == 0 ? std::string("final_latents") : fmt::format("final_latents.{}", k), latents[k]);
  if (!finite.empty()) {
    const at::Tensor flags = at::stack(finite).to(at::kCPU);
    for (int64_t i = 0; i < steps; ++i)
      DITGEN_CHECK(flags[i].item<bool>(),
                   "the latents became NaN or Inf at denoising step {} of {} (the weights or the settings overflow "
                   "the {} arithmetic; --trace DIR writes the named intermediates of the first step to find where; "
                   "--allow-nonfinite keeps going)",
                   i + 1, steps, c10::toString(s.dtype));
  }
  r.latents = std::move(latents);
  return r;
}

namespace {

// --aspect-ratio: the model card's size for that ratio (fails before anything loads).
GenerateRequest apply_aspect_ratio(const ModelEntry& entry, GenerateRequest req) {
  if (req.aspect_ratio.empty()) return req;
  const nlohmann::json table = entry.presets.value("aspect_ratios", nlohmann::json::object());
  std::string known;
  for (const auto& kv : table.items()) known += (known.empty() ? "" : ", ") + kv.key();
  DITGEN_CHECK(table.contains(req.aspect_ratio), "--aspect-ratio '{}' is not one of {}", req.aspect_ratio, known);
  DITGEN_CHECK(req.height == 0 && req.width == 0,
               "--aspect-ratio {} sets the image size; give either it or --height/--width, not both", req.aspect_ratio);
  req.width = table[req.aspect_ratio][0].get<int64_t>();
  req.height = table[req.aspect_ratio][1].get<int64_t>();
  return req;
}

// Runs one stage; an allocation failure comes back as a ditgen::Error naming the stage and the flags
// that shrink it, instead of an internal error with a C++ backtrace.
template <typename F>
auto in_stage(const char* stage, const at::Device& device, F&& f) -> decltype(f()) {
  auto oom = [&](const std::string& what) {
    fail("out of memory while {} on {} ({}): reduce --height/--width/--batch-count, or spread the model over "
         "more ranks (--tp, --ulysses, --ring)",
         stage, device.str(), what.substr(0, what.find('\n')));
  };
  try {
    return f();
  } catch (const std::bad_alloc&) {
    oom("the host allocator failed");
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    if (what.find("out of memory") != std::string::npos || what.find("not enough memory") != std::string::npos)
      oom(what);
    throw;
  }
}

// --track-memory: each stage's peaks per rank, the counters reset at the stage's start; a stage that
// runs several times (warm-up and timed runs) keeps its highest.
class StagePeaks {
 public:
  StagePeaks(const at::Device& device, bool on) : device_(device), on_(on) {}
  void begin() const {
    if (on_) runtime::reset_peaks(device_);
  }
  void end(const std::string& stage) {
    if (!on_) return;
    const auto m = runtime::read_memory(device_);
    spdlog::debug("memory after {}: host RSS {} (stage peak {}), device allocated {} (stage peak {})", stage,
                  io::human_bytes(static_cast<double>(m.host_rss)),
                  io::human_bytes(static_cast<double>(m.host_rss_peak)),
                  io::human_bytes(static_cast<double>(m.device_allocated)),
                  io::human_bytes(static_cast<double>(m.device_allocated_peak)));
    auto it = std::find_if(stages_.begin(), stages_.end(), [&](const io::StageMemory& x) { return x.stage == stage; });
    if (it == stages_.end()) it = stages_.insert(stages_.end(), io::StageMemory{stage});
    it->host_rss_peak = std::max(it->host_rss_peak, m.host_rss_peak);
    it->device_allocated_peak = std::max(it->device_allocated_peak, m.device_allocated_peak);
    it->device_reserved_peak = std::max(it->device_reserved_peak, m.device_reserved_peak);
  }
  const std::vector<io::StageMemory>& stages() const { return stages_; }

 private:
  at::Device device_;
  bool on_;
  std::vector<io::StageMemory> stages_;
};

}  // namespace

namespace {

// The request one prompt-file item runs: the command line's with the item's fields in place.
GenerateRequest item_request(const GenerateRequest& req, const PromptItem& item) {
  GenerateRequest r = req;
  if (item.prompt) r.prompt = item.prompt;
  if (item.negative_prompt) r.negative_prompt = item.negative_prompt;
  if (item.seed) r.seed = *item.seed;
  if (item.height > 0) r.height = item.height;
  if (item.width > 0) r.width = item.width;
  if (item.steps > 0) r.steps = item.steps;
  if (!item.output.empty()) r.output = item.output;
  return r;
}

// "--prompt-file F line N: " for a prompt-file item's messages, "" for a plain run.
std::string item_where(const GenerateRequest& req, const PromptItem& item) {
  return req.items.empty() ? "" : fmt::format("--prompt-file {} line {}: ", req.prompt_file, item.line);
}

// The folder a prompt file's summary goes to: --output's folder (the current one by default).
std::string summary_path(const GenerateRequest& req) {
  std::string dir = req.output.empty() ? "." : req.output;
  if (output_names_file(req.output)) {  // its folder
    const auto slash = req.output.find_last_of('/');
    dir = slash == std::string::npos ? "." : req.output.substr(0, slash);
  }
  std::string stem = req.prompt_file.substr(req.prompt_file.find_last_of('/') + 1);
  if (const auto dot = stem.find_last_of('.'); dot != std::string::npos && dot > 0) stem = stem.substr(0, dot);
  return io::join_path(dir, stem + ".summary.json");
}

}  // namespace

io::RunReport generate(const ModelEntry& entry, const GenerateRequest& request, std::shared_ptr<parallel::Context> ctx) {
  const GenerateRequest req = apply_aspect_ratio(entry, request);
  const auto& mesh = ctx->mesh();
  auto has_flag = [&](ModelFlag f) { return std::count(entry.flags.begin(), entry.flags.end(), f) > 0; };
  const bool video = has_flag(ModelFlag::Video);
  const std::string ext = video ? "mp4" : "png";
  // Before anything loads: a video needs FFmpeg (MP4) or --save-frames (PNG frames + WAV).
  DITGEN_CHECK(!video || io::mp4_supported() || req.save_frames,
               "this ditgen was built without FFmpeg's libraries (-DDITGEN_FFMPEG=OFF), so it cannot write MP4: pass "
               "--save-frames to write the frames as PNG and the audio as WAV, or rebuild with FFmpeg "
               "(scripts/setup.sh installs it)");

  // The generations of this launch: the prompt file's items, or one from the command line.
  const bool many = !req.items.empty();
  const std::vector<PromptItem> items = many ? req.items : std::vector<PromptItem>{PromptItem{}};
  if (many) {
    const bool negative = has_flag(ModelFlag::NegativePrompt) || has_flag(ModelFlag::CfgGuidance);
    for (const auto& item : items)
      DITGEN_CHECK(negative || !item.negative_prompt, "{}\"negative_prompt\": `ditgen {}` takes no negative prompt",
                   item_where(req, item), entry.command);
    // Items without their own "output" share --output: with more than one item it must be a folder.
    const bool output_is_file = output_names_file(req.output);
    int shared = 0;
    for (const auto& item : items) shared += item.output.empty();
    DITGEN_CHECK(!output_is_file || shared <= 1,
                 "--output '{}' names one file, but {} items of --prompt-file {} have no \"output\" of their own: give "
                 "a folder",
                 req.output, shared, req.prompt_file);
    std::map<std::string, int> named;  // explicit outputs must differ
    for (const auto& item : items) {
      if (item.output.empty()) continue;
      const auto [it, fresh] = named.emplace(item.output, item.line);
      DITGEN_CHECK(fresh, "--prompt-file {}: lines {} and {} both write \"{}\"", req.prompt_file, it->second, item.line,
                   item.output);
    }
  }
  // Outputs that cannot be written fail now, not after the model has run (rank 0 writes).
  if (mesh.rank() == 0)
    for (const auto& item : items) check_output_writable(item_request(req, item).output, ext);
  const auto [device, dtype] = resolve_device(req.device, req.dtype, mesh.rank());
  if (req.fp8) {
    const std::string why = nn::fp8_unavailable_reason(device);
    DITGEN_CHECK(why.empty(), "{}", why);
  }
  // A checkpoint whose weights cannot fit ends here, before any is allocated.
  if (!req.model_path.empty() && !req.random_weights && io::dir_exists(req.model_path)) {
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    check_weights_fit(
        estimate_weights(req.model_path, mesh.shape().tp, req.parallel_text ? mesh.world() : 1, dtype, req.fp8),
        device, local ? std::atoi(local) : mesh.world());
  }

  StagePeaks peaks(device, req.track_memory);
  peaks.begin();
  runtime::Stopwatch load_watch(device);
  const std::unique_ptr<Model> model =
      in_stage("loading the model", device, [&] { return entry.load(req, device, dtype, ctx); });
  // DITGEN_MEMORY_PLAN=off keeps every component resident all along (what runs did before the plan), to
  // measure what the plan saves.
  const char* plan_env = std::getenv("DITGEN_MEMORY_PLAN");
  const bool plan = !(plan_env && std::string(plan_env) == "off");
  if (!plan) model->load_deferred();
  runtime::return_freed_memory(device);  // what loading held only for a while (whole tensors before slicing)
  double load_s = load_watch.seconds();
  peaks.end("load");

  // Every rank checks every item's settings before any work, so a bad request ends the job everywhere
  // and a bad item in a prompt file ends it before the first image.
  std::vector<Settings> settings;
  for (const auto& item : items) {
    const std::string where = item_where(req, item);
    try {
      Settings s = resolve_settings(item_request(req, item), *model, device, dtype);
      check_image_size(s.height, s.width, model->pixel_multiple());
      model->check(s);
      const std::string no_cfg = model->cfg_off_reason(s);
      DITGEN_CHECK(mesh.shape().cfg == 1 || no_cfg.empty(),
                   "--cfg 2 runs the conditional and the unconditional branch on two halves of the ranks, but this "
                   "run has no unconditional branch: {}; drop --cfg",
                   no_cfg);
      settings.push_back(std::move(s));
    } catch (const Error& e) {
      if (where.empty()) throw;
      fail("{}{}", where, e.what());
    }
  }
  const int warmup_steps = req.warmup_steps > 0 ? req.warmup_steps : static_cast<int>(settings[0].steps);
  const std::string device_name = device_description(device, mesh.world());
  // TE-P is on with --parallel-text and more than one rank (one process runs the whole encoder anyway).
  const bool tep = req.parallel_text && mesh.world() > 1;
  if (req.parallel_text && !tep) spdlog::info("--parallel-text: one process, the text encoder runs whole");
  // VAE-P likewise: the decode split by image rows over every rank (lib/parallel/rows.h).
  const bool vaep = req.parallel_vae && mesh.world() > 1;

  // The memory plan (runner.h): every item's prompts once, for the warm-up and the timed runs, then the
  // text encoder goes before the transformer comes.
  peaks.begin();
  std::vector<Branches> branches;
  std::vector<double> te_seconds;
  for (const auto& s : settings) {
    runtime::Stopwatch te_watch(device);
    branches.push_back(in_stage("encoding the prompt", device, [&] { return encode_branches(*model, s, *ctx, tep); }));
    te_seconds.push_back(te_watch.seconds());
  }
  if (plan) {
    model->release(Component::TextEncoder);
    runtime::return_freed_memory(device);
  }
  peaks.end("text_encode");
  peaks.begin();
  load_watch.restart();
  in_stage("loading the transformer", device, [&] { model->load_deferred(); });
  runtime::return_freed_memory(device);
  load_s += load_watch.seconds();
  peaks.end("load_transformer");
  // The activations of the largest item's step must fit next to the weights.
  {
    int64_t need = 0;
    for (const auto& s : settings)
      need = std::max(need, estimate_step_activations(model->step_work(s), mesh.shape(), dtype));
    const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    check_activations_fit(need, device, local ? std::atoi(local) : mesh.world());
  }

  double startup_s = -1, first_step_s = 0;  // launch to the first step's start; that step's time
  auto run_once = [&](const Settings& base, const Branches& b, int64_t n_steps, bool timed, bool last) {
    Settings run = base;
    run.steps = n_steps;
    peaks.begin();
    runtime::Progress progress(timed ? "denoise" : "warmup", n_steps);
    if (startup_s < 0) startup_s = runtime::seconds_since_start();
    auto result = in_stage("denoising", device, [&] {
      return denoise(*model, run, b, model->initial_latents(run), *ctx, [&](int64_t i, double sec) {
        if (i == 0 && first_step_s == 0) first_step_s = sec;
        progress.advance(sec);
      });
    });
    progress.finish();
    peaks.end("denoise");
    if (last && plan) {  // nothing needs the transformer again
      model->release(Component::Transformer);
      runtime::return_freed_memory(device);
    }
    peaks.begin();
    runtime::Stopwatch sw(device);
    Media media = in_stage("decoding with the VAE", device, [&] { return model->decode(result.latents, run); });
    for (const at::Tensor* t : {&media.images, &media.videos, &media.audio})
      DITGEN_CHECK(run.allow_nonfinite || !t->defined() || at::isfinite(*t).all().item<bool>(),
                   "the decoded {} has NaN or Inf values (the decoder overflows the {} arithmetic; --allow-nonfinite "
                   "writes it anyway)",
                   t == &media.audio ? "audio" : (t == &media.videos ? "video" : "image"), c10::toString(dtype));
    const double vae = sw.seconds();
    peaks.end("vae_decode");
    return std::make_tuple(result.step_seconds, vae, media);
  };

  for (int i = 0; i < req.warmup; ++i) run_once(settings[0], branches[0], warmup_steps, false, false);

  nlohmann::json summary_items = nlohmann::json::array();
  io::RunReport report;
  for (size_t k = 0; k < items.size(); ++k) {
    const Settings& s = settings[k];
    const GenerateRequest ireq = item_request(req, items[k]);
    report = io::RunReport();
    report.model = model->name();
    report.device = device_name;
    if (video) {
      report.settings["num_frames"] = s.num_frames;
      report.settings["frame_rate"] = s.frame_rate;
    }
    report.settings.update({{"prompt", s.prompt},     {"height", s.height},         {"width", s.width},
                            {"steps", s.steps},       {"seed", s.seed},             {"batch", s.batch},
                            {"max_sequence_length", s.max_sequence_length},          {"dtype", c10::toString(dtype)},
                            {"mesh", mesh.describe()}, {"warmup", req.warmup},      {"repeat", req.repeat}});
    report.settings["parallel_text"] = tep;
    report.settings["parallel_vae"] = vaep;
    if (req.fp8) report.settings["fp8"] = true;
    if (many) report.settings["prompt_file"] = {{"path", req.prompt_file}, {"line", items[k].line}};
    const nlohmann::json extra = model->report_settings(s);
    report.settings.update(extra);
    spdlog::info("{}{}: {}x{}, {} steps, seed {}, {} on {} ({}) {}",
                 many ? fmt::format("[{}/{}] ", k + 1, items.size()) : "", model->name(), s.width, s.height, s.steps,
                 s.seed, c10::toString(dtype), report.device, mesh.describe(), extra.dump());

    double vae_sum = 0, total_sum = 0;
    std::vector<double> steps_sum(static_cast<size_t>(s.steps), 0.0);
    Media media;
    const int repeats = std::max(1, req.repeat);
    for (int r = 0; r < repeats; ++r) {
      runtime::Stopwatch total(device);
      auto [step_s, vae, m] = run_once(s, branches[k], s.steps, true, k + 1 == items.size() && r == repeats - 1);
      total_sum += total.seconds();
      vae_sum += vae;
      for (size_t i = 0; i < step_s.size(); ++i) steps_sum[i] += step_s[i];
      media = m;
    }
    const double n = repeats;
    double denoise_s = 0;
    for (auto& x : steps_sum) denoise_s += (x /= n);
    report.add_stage("load", load_s);
    report.add_stage("text_encode", te_seconds[k]);
    report.add_stage("denoise", denoise_s);
    report.add_stage("vae_decode", vae_sum / n);
    for (const auto& [part, sec] : media.decode_seconds) report.add_stage(part, sec);  // of the last timed run
    // As the reference's full pipeline call: the (one) prompt encoding plus a run's denoising and decode.
    report.add_stage("inference", te_seconds[k] + total_sum / n);
    report.step_seconds = steps_sum;
    report.first_step_seconds = first_step_s;

    // Every rank's load and memory numbers (a collective). Outputs are written only after it, so a job
    // that fails on any rank leaves no image of this item behind.
    io::RankStats mine;
    mine.rank = mesh.rank();
    mine.load_seconds = load_s;
    mine.startup_seconds = startup_s;
    const auto bytes = model->bytes_read();
    auto component = [&](const char* name) { return bytes.count(name) ? bytes.at(name) : 0; };
    mine.bytes_transformer = component("transformer");
    mine.bytes_text_encoder = component("text_encoder");
    mine.bytes_vae = component("vae");
    for (const auto& kv : bytes) mine.bytes_read += kv.second;
    const auto mem = runtime::read_memory(device);
    mine.host_rss_peak = mem.host_rss_peak;
    mine.device_allocated_peak = mem.device_allocated_peak;
    mine.device_reserved_peak = mem.device_reserved_peak;
    mine.stages = peaks.stages();
    if (req.track_memory) {
      // The peak after loading, as the reference tool's (it resets the counters once the pipeline is loaded):
      // the highest stage since; the deferred transformer load counts.
      mine.host_rss_peak = mine.device_allocated_peak = mine.device_reserved_peak = 0;
      for (const auto& m : mine.stages) {
        if (m.stage == "load") continue;
        mine.host_rss_peak = std::max(mine.host_rss_peak, m.host_rss_peak);
        mine.device_allocated_peak = std::max(mine.device_allocated_peak, m.device_allocated_peak);
        mine.device_reserved_peak = std::max(mine.device_reserved_peak, m.device_reserved_peak);
      }
    }
    report.ranks = io::gather_rank_stats(mine, ctx->world());
    const nlohmann::json cache_report = model->cache_report();  // null with the cache off
    if (!cache_report.is_null()) report.extra["cache"] = cache_report;
    // The transformer work of one step (all CFG branches, the whole batch): what benchmark floors divide.
    if (const StepWork work = model->step_work(s); !work.empty()) report.extra["work_per_step"] = work.to_json();

    // Every rank holds the same images. Rank 0 writes them and then the report under temporary names;
    // they move into place only once every rank has come this far, so a failed job leaves nothing.
    // Auto-named files of a prompt file's items carry the item's number.
    std::string tag = run_tag(mesh, cache_report, tep, vaep);
    if (many && items[k].output.empty()) tag += fmt::format(".{:04d}", k + 1);
    const auto paths =
        output_paths(ireq.output, model->name(), s.height, s.width, video ? s.num_frames : 0, tag, s.batch, ext);
    const bool write_mp4 = video && io::mp4_supported();
    std::vector<std::string> saved;  // what the log lists
    for (int64_t i = 0; i < s.batch; ++i) {
      if (!video || write_mp4) saved.push_back(paths.files[i]);
      if (video && req.save_frames) {
        saved.push_back(paths.stems[i] + ".frames/");
        if (media.audio.defined()) saved.push_back(paths.stems[i] + ".wav");
      }
    }
    report.outputs = saved;
    // The settings travel inside the files (PNG text "parameters", MP4 comment), as image tools expect.
    std::string parameters = s.prompt;
    if (s.has_negative_prompt) parameters += "\nNegative prompt: " + s.negative_prompt;
    parameters += fmt::format("\nSteps: {}, Seed: {}, Size: {}x{}{}, {}Model: {}, Mesh: {}, Generator: ditgen",
                              s.steps, s.seed, s.width, s.height,
                              video ? fmt::format(", Frames: {}, Frame rate: {}", s.num_frames, s.frame_rate) : "",
                              extra.empty() ? "" : "Settings: " + extra.dump() + ", ", model->name(), mesh.describe());
    io::OutputFiles files;
    // Frame folders made for --save-frames: removed again (they are empty then) when the job fails before
    // the commit, so that a failed run leaves nothing at the output path.
    struct MadeDirs {
      std::vector<std::string> dirs;
      bool keep = false;
      ~MadeDirs() {
        if (!keep)
          for (const auto& d : dirs) ::rmdir(d.c_str());
      }
    } made_dirs;
    if (mesh.rank() == 0) {
      runtime::Stopwatch write_watch(device);
      for (int64_t i = 0; i < s.batch; ++i) {
        if (!video) {
          files.add(paths.files[i], io::png_bytes(media.images[i], parameters));
          continue;
        }
        const at::Tensor audio = media.audio.defined() ? media.audio[i] : at::Tensor();
        if (write_mp4)
          io::write_mp4(files.add_path(paths.files[i]), media.videos[i], media.fps, audio, media.sample_rate,
                        parameters);
        if (req.save_frames) {
          const std::string dir = paths.stems[i] + ".frames";
          if (!io::dir_exists(dir)) made_dirs.dirs.push_back(dir);
          make_dirs(dir);
          for (int64_t f = 0; f < media.videos.size(1); ++f)
            files.add(io::join_path(dir, fmt::format("{:05d}.png", f)), io::png_bytes(media.videos[i][f]));
          if (audio.defined()) files.add(paths.stems[i] + ".wav", io::wav_bytes(audio, media.sample_rate));
        }
      }
      report.add_stage("write", write_watch.seconds());
      files.add(paths.report, report.to_json().dump(2) + "\n");
    }
    // Test hook (mpi.failed_job_leaves_nothing): this rank vanishes after rank 0 wrote its temporary files.
    if (const char* r = std::getenv("DITGEN_TEST_EXIT_BEFORE_COMMIT"); r && std::atoi(r) == mesh.rank()) std::_Exit(9);
    ctx->world().barrier();
    if (mesh.rank() == 0) {
      files.commit();
      made_dirs.keep = true;
      spdlog::info(report.table());
      if (const std::string cs = model->cache_summary(); !cs.empty()) spdlog::info("{}", cs);
      if (req.track_memory) {
        int64_t peak = 0;
        for (const auto& r : report.ranks)
          peak = std::max(peak, device.is_cuda() ? r.device_allocated_peak : r.host_rss_peak);
        spdlog::info("Memory Usage: {:.2f}GiB ({} peak, max over ranks)", static_cast<double>(peak) / (1 << 30),
                     device.is_cuda() ? "device allocated" : "host RSS");
      }
      for (const auto& p : saved) {
        const bool frames = p.back() == '/', wav = p.size() > 4 && p.compare(p.size() - 4, 4, ".wav") == 0;
        spdlog::info("{} saved to {}", frames ? "Frames" : wav ? "Audio" : video ? "Video" : "Image", p);
      }
      spdlog::info("Report saved to {}", paths.report);
    }
    if (many)
      summary_items.push_back({{"line", items[k].line},
                               {"prompt", s.prompt},
                               {"seed", s.seed},
                               {"height", s.height},
                               {"width", s.width},
                               {"steps", s.steps},
                               {"outputs", saved},
                               {"report", paths.report},
                               {"inference_s", te_seconds[k] + total_sum / n},
                               {"denoise_s", denoise_s},
                               {"step_median_s", io::median(steps_sum)}});
  }

  // A prompt file's summary: every item's outputs and times, written after the last item.
  if (many && mesh.rank() == 0) {
    const std::string path = summary_path(req);
    nlohmann::json summary = {{"model", model->name()},
                              {"device", device_name},
                              {"mesh", mesh.describe()},
                              {"prompt_file", req.prompt_file},
                              {"items", summary_items},
                              {"load_s", load_s},
                              {"startup_s", startup_s},
                              {"total_s", runtime::seconds_since_start()}};
    io::OutputFiles files;
    files.add(path, summary.dump(2) + "\n");
    files.commit();
    spdlog::info("{} prompts from {}; summary saved to {}", items.size(), req.prompt_file, path);
  }
  return report;
}

}  // namespace ditgen::pipeline
