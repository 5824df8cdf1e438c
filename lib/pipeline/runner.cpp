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
#include "lib/nn/graphs.h"
#include "lib/nn/linear.h"
#include "lib/nn/offload.h"
#include "lib/nn/ops.h"
#include "lib/pipeline/fit_check.h"
#include "lib/pipeline/load_options.h"
#include "lib/pipeline/output.h"
#include "lib/pipeline/prompt_file.h"
#include "lib/pipeline/settings_check.h"
#include "lib/pipeline/stage.h"
#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"
#include "lib/runtime/profile.h"
#include "lib/runtime/progress.h"
#include "lib/runtime/tasks.h"

namespace ditgen::pipeline {

Settings resolve_settings(const GenerateRequest& req, const Model& model, const at::Device& device,
                          at::ScalarType dtype, const std::vector<io::InputImage>& images) {
  nlohmann::json d = model.defaults();
  if (!images.empty() && d.contains("image")) d.update(d["image"]);  // e.g. image-to-video's own prompt
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
  s.audio_guidance =
      req.audio_guidance >= 0 ? req.audio_guidance : s.guidance;  // the audio follows the video
  s.num_frames = req.num_frames > 0 ? req.num_frames : d.value("num_frames", int64_t{1});
  s.frame_rate = req.frame_rate > 0 ? req.frame_rate : d.value("frame_rate", 0.0);
  s.batch = req.batch;
  s.seed = req.seed;
  s.allow_nonfinite = req.allow_nonfinite;
  s.cache = req.cache;
  s.dtype = dtype;
  s.device = device;
  s.images = images;
  s.strength = req.strength >= 0 ? req.strength : d.value("strength", 1.0);
  s.image_crf = req.image_crf >= 0 ? req.image_crf : d.value("image_crf", int64_t{0});
  if (!images.empty() && req.height == 0 && req.width == 0) {
    const auto [h, w] = model.image_size(s);
    if (h > 0 && w > 0) std::tie(s.height, s.width) = std::make_pair(h, w);
  }
  return s;
}

namespace {

// --aspect-ratio: the model card's size for that ratio (fails before anything loads).
GenerateRequest apply_aspect_ratio(const ModelEntry& entry, GenerateRequest req) {
  if (req.aspect_ratio.empty()) return req;
  const nlohmann::json table = entry.presets.value("aspect_ratios", nlohmann::json::object());
  std::string known;
  for (const auto& kv : table.items()) known += (known.empty() ? "" : ", ") + kv.key();
  DITGEN_CHECK(table.contains(req.aspect_ratio), "--aspect-ratio '{}' is not one of {}", req.aspect_ratio,
               known);
  DITGEN_CHECK(req.height == 0 && req.width == 0,
               "--aspect-ratio {} sets the image size; give either it or --height/--width, not both",
               req.aspect_ratio);
  req.width = table[req.aspect_ratio][0].get<int64_t>();
  req.height = table[req.aspect_ratio][1].get<int64_t>();
  return req;
}

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
  if (!item.images.empty()) r.images = item.images;
  if (item.strength >= 0) r.strength = item.strength;
  return r;
}

// "--prompt-file F line N: " for a prompt-file item's messages, "" for a plain run.
std::string item_where(const GenerateRequest& req, const PromptItem& item) {
  return req.items.empty() ? "" : fmt::format("--prompt-file {} line {}: ", req.prompt_file, item.line);
}

// Ranks on this host, for the fit checks (the launcher's count, else every rank).
int ranks_on_host(const comm::Mesh& mesh) {
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  return local ? std::atoi(local) : mesh.world();
}

// One run's denoise and decode (a warm-up or a timed run).
struct RunResult {
  std::vector<double> step_seconds;
  double vae_seconds = 0;
  Media media;
};

// An item's timed runs, averaged over --repeat.
struct ItemTimes {
  std::vector<double> steps;  // each step's mean
  double denoise = 0, vae = 0, total = 0;
  Media media;  // the last run's
};

// Folders made for --save-frames: removed again (they are empty then) when the job fails before the
// commit, so that a failed run leaves nothing at the output path.
struct MadeDirs {
  std::vector<std::string> dirs;
  bool keep = false;
  ~MadeDirs() {
    if (!keep)
      for (const auto& d : dirs) ::rmdir(d.c_str());
  }
};

// One `ditgen <model>` launch, phase by phase (generate() lists them). Every rank runs every phase; a
// phase that fails on one rank fails on all before any output exists.
class Launch {
 public:
  Launch(const ModelEntry& entry, const GenerateRequest& request, std::shared_ptr<parallel::Context> ctx)
      : entry_(entry), req_(apply_aspect_ratio(entry, request)), ctx_(std::move(ctx)), mesh_(ctx_->mesh()) {}

  void check_request();
  void read_images();
  void check_weights_fit() const;
  void load();
  void resolve_items();
  void check_outputs() const;
  void encode_prompts();
  void load_transformer();
  void warm_up();
  io::RunReport generate_item(size_t k);
  void write_summary() const;
  size_t item_count() const { return items_.size(); }

 private:
  bool has_flag(ModelFlag f) const { return std::count(entry_.flags.begin(), entry_.flags.end(), f) > 0; }
  void check_items() const;
  RunResult run_once(const Settings& base, const Branches& b, int64_t steps, bool timed, bool last);
  ItemTimes timed_runs(size_t k);
  io::RunReport item_report(size_t k, const ItemTimes& t) const;
  io::RankStats rank_stats() const;
  std::string file_parameters(const Settings& s) const;
  std::string output_name(const Settings& s) const;
  std::vector<std::string> write_outputs(size_t k, const ItemTimes& t, io::RunReport& report);

  const ModelEntry& entry_;
  const GenerateRequest req_;
  std::shared_ptr<parallel::Context> ctx_;
  const comm::Mesh& mesh_;
  std::vector<PromptItem> items_;  // the prompt file's, or one from the command line
  bool many_ = false, video_ = false;
  nlohmann::json lora_;  // --lora: path, scale and layers changed per file, for the reports
  std::string ext_;
  at::Device device_ = at::kCPU;
  at::ScalarType dtype_ = at::kFloat;
  bool tep_ = false, vaep_ = false;
  bool plan_ = true;  // the memory plan (runner.h); DITGEN_MEMORY_PLAN=off keeps everything resident
  std::string device_name_;

  std::unique_ptr<Model> model_;
  std::unique_ptr<StagePeaks> peaks_;
  std::unique_ptr<runtime::StepProfiler> profiler_;  // --profile: the first timed step
  double load_s_ = 0;
  double startup_s_ = -1, first_step_s_ = 0;  // launch to the first step's start; that step's time
  std::vector<Settings> settings_;            // per item
  std::vector<Branches> branches_;            // per item
  std::vector<double> te_seconds_;            // per item
  std::vector<double> image_seconds_;         // per item: encoding its conditioning images
  std::vector<std::vector<io::InputImage>> images_;  // per item: its "image" or --image, as read
  nlohmann::json summary_items_ = nlohmann::json::array();
};

// Check the request: everything that can be refused before a byte of the model is read (the output
// format, the prompt file's items, writable outputs, device and dtype, --fp8, --offload, TE-P and VAE-P).
void Launch::check_request() {
  video_ = has_flag(ModelFlag::Video);
  ext_ = video_ ? "mp4" : "png";
  // A video needs FFmpeg (MP4) or --save-frames (PNG frames + WAV).
  DITGEN_CHECK(
      !video_ || io::mp4_supported() || req_.save_frames,
      "this ditgen was built without FFmpeg's libraries (-DDITGEN_FFMPEG=OFF), so it cannot write MP4: pass "
      "--save-frames to write the frames as PNG and the audio as WAV, or rebuild with FFmpeg "
      "(scripts/setup.sh installs it)");
  many_ = !req_.items.empty();
  items_ = many_ ? req_.items : std::vector<PromptItem>{PromptItem{}};
  if (many_) check_items();
  read_images();
  // Outputs that cannot be written fail now, not after the model has run (rank 0 writes).
  if (mesh_.rank() == 0)
    for (const auto& item : items_) check_output_writable(item_request(req_, item).output, ext_);
  std::tie(device_, dtype_) = resolve_device(req_.device, req_.dtype, mesh_.rank());
  // The allocator's cap comes before any weight, and the fit checks count with it.
  apply_gpu_memory_limit(req_.gpu_memory_limit, device_);
  if (req_.fp8) {
    const std::string why = nn::fp8_unavailable_reason(device_);
    DITGEN_CHECK(why.empty(), "{}", why);
  }
  if (req_.offload) {
    const std::string why = nn::offload_unavailable_reason(device_);
    DITGEN_CHECK(why.empty(), "{}", why);
  }
  device_name_ = device_description(device_, mesh_.world());
  // TE-P is on with --parallel-text and more than one rank (one process runs the whole encoder anyway).
  tep_ = req_.parallel_text && mesh_.world() > 1;
  if (req_.parallel_text && !tep_) spdlog::info("--parallel-text: one process, the text encoder runs whole");
  // VAE-P likewise: the decode split by image rows over every rank (lib/parallel/rows.h).
  vaep_ = req_.parallel_vae && mesh_.world() > 1;
  if (!req_.profile_dir.empty()) make_dirs(req_.profile_dir);  // unwritable: refused now
  profiler_ = std::make_unique<runtime::StepProfiler>(req_.profile_dir, mesh_.rank(), device_.is_cuda());
  const char* plan_env = std::getenv("DITGEN_MEMORY_PLAN");
  plan_ = !(plan_env && std::string(plan_env) == "off");
}

// Conditioning images: each item's ("image", else --image) read and checked on every rank before anything
// loads (a bad file ends the job before a byte of the model is read); image-only flags without an image are
// refused.
void Launch::read_images() {
  const bool any_image =
      !req_.images.empty() ||
      std::any_of(items_.begin(), items_.end(), [](const PromptItem& i) { return !i.images.empty(); });
  DITGEN_CHECK(
      req_.strength < 0 || any_image,
      "--strength sets how much of an input image image-to-image keeps: give the image with --image");
  DITGEN_CHECK(
      req_.image_crf < 0 || any_image,
      "--image-crf sets how the input image is re-encoded for image-to-video: give the image with --image");
  std::map<std::string, io::InputImage> read;  // a file named by many items is read once
  for (const auto& item : items_) {
    const GenerateRequest r = item_request(req_, item);
    const std::string where = item_where(req_, item);
    DITGEN_CHECK(
        item.strength < 0 || !r.images.empty(),
        "{}\"strength\" sets how much of an input image image-to-image keeps: give the item an \"image\" "
        "(or --image)",
        where);
    std::vector<io::InputImage> images;
    if (!r.images.empty()) {
      DITGEN_CHECK(has_flag(ModelFlag::Images), "{}--image: `ditgen {}` takes no input image", where,
                   entry_.command);
      DITGEN_CHECK(static_cast<int>(r.images.size()) <= entry_.max_images,
                   "{}--image is given {} times, but `ditgen {}` ({}) takes at most {}", where,
                   r.images.size(), entry_.command, entry_.image_mode, entry_.max_images);
    }
    for (const auto& path : r.images) {
      auto it = read.find(path);
      if (it == read.end()) {
        io::InputImage im = io::read_image(path, item.images.empty() ? "--image" : where + "\"image\"");
        if (entry_.check_image) entry_.check_image(im);
        it = read.emplace(path, std::move(im)).first;
      }
      images.push_back(it->second);
    }
    images_.push_back(std::move(images));
  }
}

// A prompt file's items: negative prompts only where the model takes them, outputs that cannot collide.
void Launch::check_items() const {
  const bool negative = has_flag(ModelFlag::NegativePrompt) || has_flag(ModelFlag::CfgGuidance);
  for (const auto& item : items_) {
    DITGEN_CHECK(negative || !item.negative_prompt,
                 "{}\"negative_prompt\": `ditgen {}` takes no negative prompt", item_where(req_, item),
                 entry_.command);
    DITGEN_CHECK(item.strength < 0 || has_flag(ModelFlag::Strength),
                 "{}\"strength\": `ditgen {}` has no image-to-image strength", item_where(req_, item),
                 entry_.command);
  }
  // Items without their own "output" share --output: with more than one item it must be a folder.
  int shared = 0;
  for (const auto& item : items_) shared += item.output.empty();
  DITGEN_CHECK(
      !output_names_file(req_.output) || shared <= 1,
      "--output '{}' names one file, but {} items of --prompt-file {} have no \"output\" of their own: give "
      "a folder",
      req_.output, shared, req_.prompt_file);
}

// Check the fit: a checkpoint whose weights cannot fit ends here, before any is allocated.
void Launch::check_weights_fit() const {
  if (req_.model_path.empty() || req_.random_weights || !io::dir_exists(req_.model_path)) return;
  pipeline::check_weights_fit(estimate_weights(req_.model_path, mesh_.shape().tp,
                                               req_.parallel_text ? mesh_.world() : 1, dtype_, req_.fp8,
                                               req_.offload ? nn::BlockStreamer::kDefaultDepth : 0),
                              available_room(device_), ranks_on_host(mesh_));
}

// Load: the model's components (the transformer deferred under the memory plan), timed and measured.
void Launch::load() {
  peaks_ = std::make_unique<StagePeaks>(device_, req_.track_memory);
  peaks_->begin();
  runtime::Stopwatch watch(device_);
  model_ = in_stage("loading the model", device_, [&] { return entry_.load(req_, device_, dtype_, ctx_); });
  if (!plan_) model_->load_deferred();
  runtime::return_freed_memory(device_);  // what loading held only for a while (whole tensors before slicing)
  load_s_ = watch.seconds();
  peaks_->end("load");
  lora_ = lora_report_settings(req_);
}

// Resolve each item's settings: every rank checks every item before any work, so a bad request ends the
// job everywhere and a bad item in a prompt file ends it before the first image.
void Launch::resolve_items() {
  for (size_t k = 0; k < items_.size(); ++k) {
    const PromptItem& item = items_[k];
    try {
      Settings s = resolve_settings(item_request(req_, item), *model_, device_, dtype_, images_[k]);
      check_settings(s, many_ ? fmt::format("--prompt-file {} line {}", req_.prompt_file, item.line)
                              : "the command line and presets");
      check_image_size(s.height, s.width, model_->pixel_multiple());
      model_->check(s);
      const std::string no_cfg = model_->cfg_off_reason(s);
      DITGEN_CHECK(
          mesh_.shape().cfg == 1 || no_cfg.empty(),
          "--cfg 2 runs the conditional and the unconditional branch on two halves of the ranks, but this "
          "run has no unconditional branch: {}; drop --cfg",
          no_cfg);
      settings_.push_back(std::move(s));
    } catch (const Error& e) {
      if (!many_) throw;
      fail("{}{}", item_where(req_, item), e.what());
    }
  }
}

// Check the outputs: every file the launch will write (each item's images or videos, frames, sound,
// reports, the summary), compared after normalising their paths, before the first item runs; none may
// coincide with another or with an input (the prompt file, an input image).
void Launch::check_outputs() const {
  std::vector<LaunchFile> outputs, inputs;
  for (size_t k = 0; k < items_.size(); ++k) {
    const Settings& s = settings_[k];
    std::string tag = run_tag_pattern(mesh_, s.cache.enabled, tep_, vaep_);
    if (many_ && items_[k].output.empty()) tag += fmt::format(".{:04d}", k + 1);
    for (auto& f : planned_outputs(item_request(req_, items_[k]).output, output_name(s), s.height, s.width,
                                   video_ ? s.num_frames : 0, tag, s.batch, ext_, video_ && req_.save_frames,
                                   many_ ? fmt::format("--prompt-file {} line {}", req_.prompt_file, items_[k].line)
                                         : "--output"))
      outputs.push_back(std::move(f));
  }
  if (many_) {
    outputs.push_back({prompt_file_summary_path(req_.output, req_.prompt_file), "the prompt-file summary"});
    inputs.push_back({req_.prompt_file, "--prompt-file"});
  }
  for (const auto& item_images : images_)
    for (const auto& im : item_images) inputs.push_back({im.path, "--image"});
  check_launch_files(outputs, inputs);
}

// Encode: every item's prompts (and conditioning images) once, for the warm-up and the timed runs; then
// the text encoder goes before the transformer comes (the memory plan).
void Launch::encode_prompts() {
  peaks_->begin();
  for (auto& s : settings_) {
    runtime::Stopwatch watch(device_);
    branches_.push_back(
        in_stage("encoding the prompt", device_, [&] { return encode_branches(*model_, s, *ctx_, tep_); }));
    join_branches(*model_, branches_.back(), s, *ctx_);
    te_seconds_.push_back(watch.seconds());
    watch.restart();
    if (!s.images.empty())
      s.image_conditioning = in_stage("encoding the input images", device_, [&] { return model_->encode_images(s); });
    image_seconds_.push_back(watch.seconds());
  }
  if (plan_) {
    model_->release(Component::TextEncoder);
    runtime::return_freed_memory(device_);
  }
  peaks_->end("text_encode");
}

// The transformer, read once the text encoder is gone; then the largest item's step activations must fit
// next to it.
void Launch::load_transformer() {
  auto step_activations = [&] {
    int64_t need = 0;
    for (const auto& s : settings_)
      need = std::max(need, estimate_step_activations(model_->step_work(s), mesh_.shape(), dtype_));
    return need;
  };
  int64_t need = step_activations();
  // --offload: the blocks that stay on the GPU leave the step's activations free (with a margin).
  if (req_.offload) model_->set_offload_reserve(std::max<int64_t>(need + need / 2, nn::BlockStreamer::kDefaultReserve));
  peaks_->begin();
  runtime::Stopwatch watch(device_);
  in_stage("loading the transformer", device_, [&] { model_->load_deferred(); });
  runtime::return_freed_memory(device_);
  load_s_ += watch.seconds();
  peaks_->end("load_transformer");
  const Room room = available_room(device_);
  const bool joint = std::any_of(settings_.begin(), settings_.end(), [](const Settings& s) { return s.joint_cfg; });
  if (joint && !activations_fit(need, room, ranks_on_host(mesh_))) {
    // The CFG branches one after the other (half the activations) where together they do not fit.
    if (mesh_.rank() == 0)
      spdlog::info("the two CFG branches run one after the other: as one call they would need about {} of "
                   "activations but {} once the weights are loaded",
                   io::human_bytes(need), room.describe());
    for (size_t k = 0; k < settings_.size(); ++k) {
      branches_[k].both.reset();
      settings_[k].joint_cfg = false;
    }
    need = step_activations();
  }
  check_activations_fit(need, room, ranks_on_host(mesh_));
}

// Denoise and decode once. `last`: nothing needs the transformer after this run's denoising.
RunResult Launch::run_once(const Settings& base, const Branches& b, int64_t steps, bool timed, bool last) {
  Settings run = base;
  run.steps = steps;
  peaks_->begin();
  // The schedule may run fewer steps than asked (image-to-image starts part way).
  runtime::Progress progress(timed ? "denoise" : "warmup", static_cast<int64_t>(model_->schedule(run).timesteps.size()));
  if (startup_s_ < 0) startup_s_ = runtime::seconds_since_start();
  Latents initial = in_stage("denoising", device_, [&] { return model_->initial_latents(run); });
  if (timed) profiler_->start();  // --profile: the first timed step (no-op otherwise, or once done)
  auto result = in_stage("denoising", device_, [&] {
    return denoise(*model_, run, b, std::move(initial), *ctx_, [&](int64_t i, double sec) {
      if (i == 0 && first_step_s_ == 0) first_step_s_ = sec;
      if (i == 0 && timed) {
        const std::string table = profiler_->stop(fmt::format("{} denoising step 1 of {}, {}", model_->name(),
                                                               run.steps, mesh_.describe()));
        if (!table.empty() && mesh_.rank() == 0)
          spdlog::info("profile of the first timed step (traces and tables in {}):\n{}", req_.profile_dir, table);
      }
      progress.advance(sec);
    });
  });
  progress.finish();
  peaks_->end("denoise");
  if (last && plan_) {
    model_->release(Component::Transformer);
    runtime::return_freed_memory(device_);
  }
  peaks_->begin();
  runtime::Stopwatch sw(device_);
  RunResult r;
  r.media = in_stage("decoding with the VAE", device_, [&] { return model_->decode(result.latents, run); });
  for (const at::Tensor* t : {&r.media.images, &r.media.videos, &r.media.audio})
    DITGEN_CHECK(
        run.allow_nonfinite || !t->defined() || at::isfinite(*t).all().item<bool>(),
        "the decoded {} has NaN or Inf values (the decoder overflows the {} arithmetic; --allow-nonfinite "
        "writes it anyway)",
        t == &r.media.audio ? "audio" : (t == &r.media.videos ? "video" : "image"), c10::toString(dtype_));
  r.vae_seconds = sw.seconds();
  peaks_->end("vae_decode");
  r.step_seconds = std::move(result.step_seconds);
  return r;
}

// Warm up: --warmup untimed runs of the first item (--warmup-steps steps each).
void Launch::warm_up() {
  const int64_t steps = req_.warmup_steps > 0 ? req_.warmup_steps : settings_[0].steps;
  for (int i = 0; i < req_.warmup; ++i) run_once(settings_[0], branches_[0], steps, false, false);
}

// Item k's --repeat timed runs; the transformer goes after the last item's last denoising.
ItemTimes Launch::timed_runs(size_t k) {
  const Settings& s = settings_[k];
  ItemTimes t;
  const int repeats = std::max(1, req_.repeat);
  for (int r = 0; r < repeats; ++r) {
    runtime::Stopwatch total(device_);
    RunResult run = run_once(s, branches_[k], s.steps, true, k + 1 == items_.size() && r == repeats - 1);
    t.total += total.seconds();
    t.vae += run.vae_seconds;
    t.steps.resize(run.step_seconds.size(), 0.0);
    for (size_t i = 0; i < run.step_seconds.size(); ++i) t.steps[i] += run.step_seconds[i];
    t.media = std::move(run.media);
  }
  t.total /= repeats;
  t.vae /= repeats;
  for (auto& x : t.steps) t.denoise += (x /= repeats);
  return t;
}

// This rank's load and memory numbers for the report.
io::RankStats Launch::rank_stats() const {
  io::RankStats mine;
  mine.rank = mesh_.rank();
  mine.load_seconds = load_s_;
  mine.startup_seconds = startup_s_;
  const auto bytes = model_->bytes_read();
  auto component = [&](const char* name) { return bytes.count(name) ? bytes.at(name) : 0; };
  mine.bytes_transformer = component("transformer");
  mine.bytes_text_encoder = component("text_encoder");
  mine.bytes_vae = component("vae");
  for (const auto& kv : bytes) mine.bytes_read += kv.second;
  const auto mem = runtime::read_memory(device_);
  mine.host_rss_peak = mem.host_rss_peak;
  mine.device_allocated_peak = mem.device_allocated_peak;
  mine.device_reserved_peak = mem.device_reserved_peak;
  mine.stages = peaks_->stages();
  if (req_.track_memory) {
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
  return mine;
}

// Report: item k's settings, stage times, every rank's numbers (a collective), the cache and the work.
io::RunReport Launch::item_report(size_t k, const ItemTimes& t) const {
  const Settings& s = settings_[k];
  io::RunReport report;
  report.model = model_->name();
  report.device = device_name_;
  if (video_) {
    report.settings["num_frames"] = s.num_frames;
    report.settings["frame_rate"] = s.frame_rate;
  }
  report.settings.update({{"prompt", s.prompt},
                          {"height", s.height},
                          {"width", s.width},
                          {"steps", s.steps},
                          {"seed", s.seed},
                          {"batch", s.batch},
                          {"max_sequence_length", s.max_sequence_length},
                          {"dtype", c10::toString(dtype_)},
                          {"mesh", mesh_.describe()},
                          {"warmup", req_.warmup},
                          {"repeat", req_.repeat}});
  report.settings["parallel_text"] = tep_;
  report.settings["parallel_vae"] = vaep_;
  if (req_.fp8) report.settings["fp8"] = true;
  // What the GPU kernels were asked for (--attention, --cuda-graphs): sweeps tell their rows apart by them.
  report.settings["attention"] = nn::attention_backend_name();
  report.settings["cuda_graphs"] = nn::cuda_graphs_on() ? "on" : "off";
  if (req_.offload) report.settings["offload"] = true;
  if (req_.gpu_memory_limit.set())
    report.settings["gpu_memory_limit"] = {{"gib", req_.gpu_memory_limit.gib},
                                           {"source", req_.gpu_memory_limit.source()}};
  if (many_) report.settings["prompt_file"] = {{"path", req_.prompt_file}, {"line", items_[k].line}};
  if (!s.images.empty()) {
    nlohmann::json images = nlohmann::json::array();
    for (const auto& im : s.images) images.push_back({{"path", im.path}, {"sha256", im.sha256}});
    report.settings["images"] = images;
  }
  if (!lora_.empty()) report.settings["lora"] = lora_;
  report.settings.update(model_->report_settings(s));
  report.add_stage("load", load_s_);
  report.add_stage("text_encode", te_seconds_[k]);
  if (!s.images.empty()) report.add_stage("image_encode", image_seconds_[k]);
  report.add_stage("denoise", t.denoise);
  report.add_stage("vae_decode", t.vae);
  for (const auto& [part, sec] : t.media.decode_seconds)
    report.add_stage(part, sec);  // of the last timed run
  // As the reference's full pipeline call: the (one) prompt encoding plus a run's denoising and decode.
  report.add_stage("inference", te_seconds_[k] + image_seconds_[k] + t.total);
  report.step_seconds = t.steps;
  report.first_step_seconds = first_step_s_;
  // Outputs are written only after this collective, so a job that fails on any rank leaves no file of
  // this item behind.
  report.ranks = io::gather_rank_stats(rank_stats(), ctx_->world());
  const nlohmann::json cache_report = model_->cache_report();  // null with the cache off
  if (!cache_report.is_null()) report.extra["cache"] = cache_report;
  // --offload: rank 0's streamers (each rank streams its own slice of the same blocks).
  if (nlohmann::json offload = model_->offload_report(); !offload.is_null()) {
    offload["rank"] = mesh_.rank();
    report.extra["offload"] = offload;
  }
  if (s.joint_cfg) report.extra["cfg_branches"] = "one transformer call of twice the batch";
  // The transformer work of one step (all CFG branches, the whole batch): what benchmark floors divide.
  if (const StepWork work = model_->step_work(s); !work.empty())
    report.extra["work_per_step"] = work.to_json();
  return report;
}

// The settings that travel inside the files (PNG text "parameters", MP4 comment), as image tools expect.
std::string Launch::file_parameters(const Settings& s) const {
  const nlohmann::json extra = model_->report_settings(s);
  std::string p = s.prompt;
  if (s.has_negative_prompt) p += "\nNegative prompt: " + s.negative_prompt;
  for (const auto& im : s.images) p += fmt::format("\nImage: {} (SHA-256 {})", im.path, im.sha256);
  p += fmt::format("\nSteps: {}, Seed: {}, Size: {}x{}{}, {}Model: {}, Mesh: {}, Generator: ditgen", s.steps,
                   s.seed, s.width, s.height,
                   video_ ? fmt::format(", Frames: {}, Frame rate: {}", s.num_frames, s.frame_rate) : "",
                   extra.empty() ? "" : "Settings: " + extra.dump() + ", ", model_->name(), mesh_.describe());
  return p;
}

// The model part of auto-named outputs: the model's name, with the image mode after its stem when images
// condition the run (ltx2_i2v-tiny, flux2_edit), as the reference tool's example names.
std::string Launch::output_name(const Settings& s) const {
  std::string name = model_->name();
  if (s.images.empty() || entry_.image_mode.empty()) return name;
  return name.insert(std::min(name.find('-'), name.size()), "_" + entry_.image_mode);
}

// Write: rank 0 writes item k's files and its report under temporary names; they move into place only
// once every rank has come this far, so a failed job leaves nothing. Returns the paths the log lists.
std::vector<std::string> Launch::write_outputs(size_t k, const ItemTimes& t, io::RunReport& report) {
  const Settings& s = settings_[k];
  // Auto-named files of a prompt file's items carry the item's number.
  std::string tag = run_tag(mesh_, report.extra.value("cache", nlohmann::json()), tep_, vaep_);
  if (many_ && items_[k].output.empty()) tag += fmt::format(".{:04d}", k + 1);
  const auto paths = output_paths(item_request(req_, items_[k]).output, output_name(s), s.height, s.width,
                                  video_ ? s.num_frames : 0, tag, s.batch, ext_);
  const bool write_mp4 = video_ && io::mp4_supported();
  const Media& media = t.media;
  std::vector<std::string> saved;
  for (int64_t i = 0; i < s.batch; ++i) {
    if (!video_ || write_mp4) saved.push_back(paths.files[i]);
    if (video_ && req_.save_frames) {
      saved.push_back(paths.stems[i] + ".frames/");
      if (media.audio.defined()) saved.push_back(paths.stems[i] + ".wav");
    }
  }
  report.outputs = saved;
  const std::string parameters = file_parameters(s);
  io::OutputFiles files;
  MadeDirs made_dirs;
  if (mesh_.rank() == 0) {
    // Encode (PNG in memory, the frames of a video in parallel; MP4 through FFmpeg, which writes its file),
    // then write the in-memory files: two stages of the report.
    runtime::Stopwatch watch(device_);
    std::vector<std::pair<std::string, std::string>> encoded;  // path, bytes
    for (int64_t i = 0; i < s.batch; ++i) {
      if (!video_) {
        encoded.emplace_back(paths.files[i], io::png_bytes(media.images[i], parameters));
        continue;
      }
      const at::Tensor audio = media.audio.defined() ? media.audio[i] : at::Tensor();
      if (write_mp4)
        io::write_mp4(files.add_path(paths.files[i]), media.videos[i], media.fps, audio, media.sample_rate,
                      parameters);
      if (req_.save_frames) {
        const std::string dir = paths.stems[i] + ".frames";
        if (!io::dir_exists(dir)) made_dirs.dirs.push_back(dir);
        make_dirs(dir);
        const int64_t frames = media.videos.size(1);
        std::vector<std::string> pngs(static_cast<size_t>(frames));
        const at::Tensor video = media.videos[i].to(at::kCPU);
        runtime::parallel_tasks(frames, [&](int64_t f) { pngs[f] = io::png_bytes(video[f]); });
        for (int64_t f = 0; f < frames; ++f)
          encoded.emplace_back(io::join_path(dir, fmt::format("{:05d}.png", f)), std::move(pngs[f]));
        if (audio.defined()) encoded.emplace_back(paths.stems[i] + ".wav", io::wav_bytes(audio, media.sample_rate));
      }
    }
    report.add_stage("encode", watch.seconds());
    watch.restart();
    for (auto& [path, bytes] : encoded) files.add(path, bytes);
    report.add_stage("write", watch.seconds());
    files.add(paths.report, report.to_json().dump(2) + "\n");
  }
  // Test hook (mpi.failed_job_leaves_nothing): this rank vanishes after rank 0 wrote its temporary files.
  if (const char* r = std::getenv("DITGEN_TEST_EXIT_BEFORE_COMMIT"); r && std::atoi(r) == mesh_.rank())
    std::_Exit(9);
  ctx_->world().barrier();
  if (mesh_.rank() == 0) {
    files.commit();
    made_dirs.keep = true;
  }
  saved.push_back(paths.report);  // listed last
  return saved;
}

// Generate item k: its timed runs, its report, its files; the log and the summary entry on rank 0.
io::RunReport Launch::generate_item(size_t k) {
  const Settings& s = settings_[k];
  spdlog::info("{}{}: {}x{}, {} steps, seed {}, {} on {} ({}) {}",
               many_ ? fmt::format("[{}/{}] ", k + 1, items_.size()) : "", model_->name(), s.width, s.height,
               s.steps, s.seed, c10::toString(dtype_), device_name_, mesh_.describe(),
               model_->report_settings(s).dump());
  const ItemTimes t = timed_runs(k);
  io::RunReport report = item_report(k, t);
  std::vector<std::string> saved = write_outputs(k, t, report);
  const std::string report_path = saved.back();
  saved.pop_back();
  if (mesh_.rank() == 0) {
    spdlog::info(report.table());
    if (const std::string cs = model_->cache_summary(); !cs.empty()) spdlog::info("{}", cs);
    if (const std::string os = model_->offload_summary(); !os.empty()) spdlog::info("{}", os);
    if (req_.track_memory) {
      int64_t peak = 0;
      for (const auto& r : report.ranks)
        peak = std::max(peak, device_.is_cuda() ? r.device_allocated_peak : r.host_rss_peak);
      spdlog::info("Memory Usage: {:.2f}GiB ({} peak, max over ranks)", static_cast<double>(peak) / (1 << 30),
                   device_.is_cuda() ? "device allocated" : "host RSS");
    }
    for (const auto& p : saved) {
      const bool frames = p.back() == '/', wav = p.size() > 4 && p.compare(p.size() - 4, 4, ".wav") == 0;
      spdlog::info("{} saved to {}", frames ? "Frames" : wav ? "Audio" : video_ ? "Video" : "Image", p);
    }
    spdlog::info("Report saved to {}", report_path);
  }
  if (many_)
    summary_items_.push_back({{"line", items_[k].line},
                              {"prompt", s.prompt},
                              {"seed", s.seed},
                              {"height", s.height},
                              {"width", s.width},
                              {"steps", s.steps},
                              {"outputs", saved},
                              {"report", report_path},
                              {"inference_s", te_seconds_[k] + image_seconds_[k] + t.total},
                              {"denoise_s", t.denoise},
                              {"step_median_s", io::median(t.steps)}});
  return report;
}

// A prompt file's summary: every item's outputs and times, written by rank 0 after the last item.
void Launch::write_summary() const {
  if (!many_ || mesh_.rank() != 0) return;
  const std::string path = prompt_file_summary_path(req_.output, req_.prompt_file);
  const nlohmann::json summary = {{"model", model_->name()},  {"device", device_name_},
                                  {"mesh", mesh_.describe()}, {"prompt_file", req_.prompt_file},
                                  {"items", summary_items_},  {"load_s", load_s_},
                                  {"startup_s", startup_s_},  {"total_s", runtime::seconds_since_start()}};
  io::OutputFiles files;
  files.add(path, summary.dump(2) + "\n");
  files.commit();
  spdlog::info("{} prompts from {}; summary saved to {}", items_.size(), req_.prompt_file, path);
}

}  // namespace

io::RunReport generate(const ModelEntry& entry, const GenerateRequest& request,
                       std::shared_ptr<parallel::Context> ctx) {
  Launch launch(entry, request, std::move(ctx));
  launch.check_request();
  launch.check_weights_fit();
  launch.load();
  launch.resolve_items();
  launch.check_outputs();
  launch.encode_prompts();
  launch.load_transformer();
  launch.warm_up();
  io::RunReport report;
  for (size_t k = 0; k < launch.item_count(); ++k) report = launch.generate_item(k);
  launch.write_summary();
  return report;
}

}  // namespace ditgen::pipeline
