// ditgen: the command line. Parses flags, then makes one call into the engine.
#include <CLI/CLI.hpp>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>

#include "lib/comm/agreement.h"
#include "lib/comm/launch.h"
#include "lib/nn/graphs.h"
#include "lib/nn/linear.h"
#include "lib/nn/ops.h"
#include "lib/parallel/context.h"
#include "lib/pipeline/memory_limit.h"
#include "lib/pipeline/output.h"
#include "lib/pipeline/runner.h"
#include "lib/pipeline/settings_check.h"
#include "lib/runtime/error.h"
#include "lib/runtime/logging.h"
#include "lib/runtime/trace.h"
#include "lib/runtime/versions.h"
#include "models/registry.h"
#include "models/verify_cases.h"

namespace {

constexpr const char* kVersion = "ditgen 0.2";

// Validators with readable messages, from the one validation every source of settings shares
// (lib/pipeline/settings_check.h). CLI11's own ranges print the largest double in full, accept NaN for
// "non-negative" numbers (NaN >= 0 is false, so the preset silently won) and wrap "-1" into an unsigned
// seed.
CLI::Validator integer_in(int64_t lo, int64_t hi) {
  return CLI::Validator([lo, hi](std::string& in) { return ditgen::pipeline::integer_fault(in, lo, hi); },
                        fmt::format("INT in [{}, {}]", lo, hi));
}

CLI::Validator unsigned_integer() {
  return CLI::Validator([](std::string& in) { return ditgen::pipeline::unsigned_fault(in); }, "UINT64");
}

// A finite number >= lo (> lo when `strict`), at most `hi`.
CLI::Validator finite_number(double lo, bool strict, double hi) {
  return CLI::Validator([=](std::string& in) { return ditgen::pipeline::number_fault(in, lo, strict, hi); },
                        fmt::format("NUMBER {} {}", strict ? ">" : ">=", lo));
}

// The rule of generation setting `key` (the same range as its prompt-file and presets key).
CLI::Validator setting(const char* key) {
  const ditgen::pipeline::SettingRule& r = ditgen::pipeline::setting_rule(key);
  std::string desc;
  if (r.kind == ditgen::pipeline::SettingKind::Integer || r.kind == ditgen::pipeline::SettingKind::IntegerList)
    desc = fmt::format("INT in [{}, {}]", static_cast<int64_t>(r.lo), static_cast<int64_t>(r.hi));
  else if (r.kind == ditgen::pipeline::SettingKind::Number)
    desc = fmt::format("NUMBER {} {}", r.lo_open ? ">" : ">=", r.lo);
  else if (r.kind == ditgen::pipeline::SettingKind::Unsigned)
    desc = "UINT64";
  return CLI::Validator([&r](std::string& in) { return ditgen::pipeline::setting_fault(r, in); }, desc);
}

CLI::Validator non_empty() {
  return CLI::Validator(
      [](std::string& in) -> std::string { return in.empty() ? std::string("must not be empty") : std::string(); },
      "");
}

// --attention: the fused attention kernel on GPUs (see nn::AttentionBackend).
void add_attention_flag(CLI::App* app, std::string& value) {
  app->add_option("--attention", value,
                  "GPU attention kernel: auto (cuDNN where it applies, else flash), flash, sdpa (the dispatcher's "
                  "choice), or fp8 (cuDNN's FP8 attention on Hopper for attention of at least 2048 queries and keys: "
                  "q, k, v and softmax in e4m3 with per-tensor scales; else auto)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "flash", "sdpa", "fp8"}));
}

// --cuda-graphs: the transformer's blocks of a step replayed as one CUDA graph (see nn::BlockGraphs).
void add_cuda_graphs_flag(CLI::App* app, std::string& value) {
  app->add_option("--cuda-graphs", value,
                  "GPU: replay the transformer's blocks as one CUDA graph from the second step on (one rank per "
                  "replica, no --offload, no --cache): on or off")
      ->capture_default_str()
      ->check(CLI::IsMember({"on", "off"}));
}

// Mesh flags shared by every command that runs a model.
struct MeshFlags {
  std::string preset;
  int ulysses = 0, ring = 0, tp = 0, cfg = 0;
  double timeout_s = 300;
  std::string comm = "auto";

  void add(CLI::App* app) {
    std::string names;
    for (const auto& n : ditgen::comm::preset_names()) names += (names.empty() ? "" : ", ") + n;
    app->add_option("--parallel", preset, "parallelism preset for the launched ranks: " + names);
    app->add_option("--ulysses", ulysses, "Ulysses (all-to-all) context-parallel degree")->check(integer_in(1, 4096));
    app->add_option("--ring", ring, "Ring context-parallel degree")->check(integer_in(1, 4096));
    app->add_option("--tp", tp, "tensor-parallel degree")->check(integer_in(1, 4096));
    app->add_option("--cfg", cfg, "CFG-parallel degree (1 or 2; true-CFG models only)")->check(integer_in(1, 2));
    app->add_option("--comm-timeout", timeout_s, "seconds any collective may wait for its peers before the job ends")
        ->capture_default_str()
        ->check(finite_number(0, true, 1e7));
    app->add_option("--comm", comm,
                    "how GPU ranks talk: nccl (one rank per GPU), mpi (GPU tensors through pinned host buffers; ranks "
                    "may share a GPU) or auto (nccl unless a host runs more ranks than it has GPUs)")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "nccl", "mpi"}));
  }

  ditgen::comm::MeshShape resolve(int world) const {
    return ditgen::comm::resolve_shape(preset, ulysses, ring, tp, cfg, world);
  }
};

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) then fails the write with EFBIG, reported, instead of killing the
  // process halfway through a file.
  signal(SIGXFSZ, SIG_IGN);
  ditgen::nn::gemms_without_workspace();
  const ditgen::comm::LaunchInfo launch = ditgen::comm::launch(&argc, &argv);

  CLI::App app{"ditgen: diffusion transformers on many GPUs (mpirun -np N ditgen <command> ...)"};
  app.require_subcommand(1);
  // Global flags (--log-level, -v) are taken after the command too: `ditgen flux2 ... --log-level warn`.
  // Subcommands inherit this when they are created, so it must come before them.
  app.fallthrough();
  app.set_version_flag("--version", std::string(kVersion) + "\n" + ditgen::runtime::build_versions());
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "print debug information (--log-level debug)");
  std::string log_level = "info";
  CLI::Option* log_level_opt =
      app.add_option("--log-level", log_level,
                     "rank 0 logs at this level, the other ranks at warn and above (overrides -v)")
          ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
          ->capture_default_str();

  // ---- ditgen <model>: one subcommand per registered model ----
  struct ModelCommand {
    const ditgen::pipeline::ModelEntry* entry;
    CLI::App* app;
    std::string prompt, negative;  // taken only when given: an explicit empty prompt is empty
    CLI::Option *prompt_opt = nullptr, *negative_opt = nullptr;
    std::vector<CLI::Option*> cache_flags;  // meaningful only with --cache
    ditgen::pipeline::GenerateRequest req;
    MeshFlags mesh;
    CLI::Option* gpu_memory_limit_opt = nullptr;  // given: it wins over DITGEN_GPU_MEMORY_LIMIT
  };
  std::vector<std::unique_ptr<ModelCommand>> model_commands;
  std::string trace_dir, attention = "auto", cuda_graphs = "on";
  for (const auto& entry : ditgen::registered_models()) {
    auto cmd = std::make_unique<ModelCommand>();
    cmd->entry = &entry;
    auto& req = cmd->req;
    auto* sub = app.add_subcommand(entry.command, entry.summary);
    cmd->app = sub;
    // "(default 1024; tiny 128)" from the model's presets.
    auto dflt = [&](const char* key) {
      const auto& p = entry.presets;
      // A key of a defaults object, or of its "image" section (settings only runs with --image use).
      auto value = [&](const nlohmann::json& d) {
        if (d.contains(key)) return d[key];
        return d.contains("image") && d["image"].contains(key) ? d["image"][key] : nlohmann::json();
      };
      const nlohmann::json real = p.contains("defaults") ? value(p["defaults"]) : nlohmann::json();
      if (real.is_null()) return std::string();
      std::string d = " (default " + real.dump();
      const nlohmann::json tiny = p.contains("tiny") ? value(p["tiny"]["defaults"]) : nlohmann::json();
      if (!tiny.is_null() && tiny != real) d += "; tiny " + tiny.dump();
      return d + ")";
    };
    sub->add_option("--model-path", req.model_path, "diffusers folder of the model (default: the built-in tiny model)")
        ->check(non_empty());
    sub->add_flag("--random-weights", req.random_weights,
                  "seeded random weights at the real size (or the --model-path configs): benchmarks without a checkpoint");
    cmd->prompt_opt = sub->add_option("-p,--prompt", cmd->prompt, "text prompt (default: the preset prompt)");
    sub->add_option("--prompt-file", req.prompt_file,
                    "many generations, the model loaded once: one prompt per line, or JSON Lines with per-item "
                    "prompt, negative_prompt, seed, height, width, steps, output")
        ->check(non_empty())
        ->excludes(cmd->prompt_opt);
    sub->add_option("-H,--height", req.height, "height in pixels" + dflt("height"))->check(setting("height"));
    sub->add_option("-W,--width", req.width, "width in pixels" + dflt("width"))->check(setting("width"));
    sub->add_option("--steps,--num-inference-steps", req.steps, "denoising steps" + dflt("steps"))
        ->check(setting("steps"));
    for (auto flag : entry.flags) {
      using ditgen::pipeline::ModelFlag;
      switch (flag) {
        case ModelFlag::Guidance:
          sub->add_option("--guidance,--guidance-scale", req.guidance, "embedded guidance scale" + dflt("guidance"))
              ->check(setting("guidance"));
          break;
        case ModelFlag::NegativePrompt:
          cmd->negative_opt = sub->add_option("--negative-prompt", cmd->negative,
                                              "negative prompt of true CFG; an empty one counts" + dflt("negative_prompt"));
          break;
        case ModelFlag::TrueCfgScale:
          sub->add_option("--true-cfg-scale", req.true_cfg_scale,
                          "true classifier-free guidance scale; <= 1 turns CFG off (one transformer pass per step)" +
                              dflt("true_cfg_scale"))
              ->check(setting("true_cfg_scale"));
          break;
        case ModelFlag::AspectRatio: {
          std::string names;
          const nlohmann::json table = entry.presets.value("aspect_ratios", nlohmann::json::object());
          for (const auto& kv : table.items())
            names += (names.empty() ? "" : ", ") + kv.key() + " (" + std::to_string(kv.value()[0].get<int>()) + "x" +
                     std::to_string(kv.value()[1].get<int>()) + ")";
          sub->add_option("--aspect-ratio", req.aspect_ratio, "the model card's size for an aspect ratio, W x H: " + names);
          break;
        }
        case ModelFlag::TextEncoderOutLayers:
          sub->add_option("--text-encoder-out-layers", req.text_encoder_out_layers,
                          "text-encoder layers whose hidden states feed the transformer" + dflt("text_encoder_out_layers"))
              ->delimiter(',')
              ->check(setting("text_encoder_out_layers"));
          break;
        case ModelFlag::CfgGuidance:
          sub->add_option("--guidance,--guidance-scale", req.guidance,
                          "classifier-free guidance scale of the video; CFG runs when it or the audio's is above 1" +
                              dflt("guidance"))
              ->check(setting("guidance"));
          sub->add_option("--audio-guidance,--audio-guidance-scale", req.audio_guidance,
                          "classifier-free guidance scale of the audio (default: the video's)")
              ->check(setting("audio_guidance"));
          break;
        case ModelFlag::Cache: {
          // The reference tool's cache flags and CLI defaults (cache-dit-semantics.md §5.8, §6.1).
          auto& c = req.cache;
          auto* g = sub->add_option_group("cache", "DBCache (block cache), TaylorSeer and step masks");
          g->add_flag("--cache", c.enabled, "skip redundant transformer blocks with DBCache");
          cmd->cache_flags = {
              g->add_option("--Fn", c.Fn, "first blocks of each list always computed")->capture_default_str()
                  ->check(integer_in(0, 1000)),
              g->add_option("--Bn", c.Bn, "last blocks of each list always computed")->capture_default_str()
                  ->check(integer_in(0, 1000)),
              g->add_option("--rdt", c.residual_diff_threshold, "residual difference threshold: below it a step is cached")
                  ->capture_default_str()->check(finite_number(0, false, 1e6)),
              g->add_option("--ws", c.max_warmup_steps, "warm-up steps always computed")->capture_default_str()
                  ->check(integer_in(0, 100000)),
              g->add_option("--wi", c.warmup_interval, "warm-up interval")->capture_default_str()->check(integer_in(1, 100000)),
              g->add_option("--mc", c.max_cached_steps, "most cached steps per list (-1: unlimited)")->capture_default_str()
                  ->check(integer_in(-1, 100000)),
              g->add_option("--mcc", c.max_continuous_cached_steps, "most consecutive cached steps (-1: unlimited)")
                  ->capture_default_str()->check(integer_in(-1, 100000)),
              g->add_flag("--taylorseer", c.taylorseer, "extrapolate cached residuals with TaylorSeer"),
              g->add_option("--taylorseer-order", c.taylorseer_order, "TaylorSeer order")->capture_default_str()
                  ->check(integer_in(1, 8)),
              g->add_option("--scm,--mask-policy", c.mask_policy, "steps-computation mask: slow, medium, fast or ultra")
                  ->check(CLI::IsMember({"slow", "medium", "fast", "ultra", "s", "m", "f", "u"})),
              g->add_option("--steps-mask", c.steps_mask,
                            "a steps-computation mask, one 0/1 per step (1 = compute)")
                  ->check(non_empty()),
              g->add_option("--scm-policy", c.mask_mode, "dynamic (cached mask steps still measured) or static")
                  ->capture_default_str()->check(CLI::IsMember({"dynamic", "static"})),
          };
          break;
        }
        case ModelFlag::Fp8:
          sub->add_flag("--fp8", req.fp8,
                        "transformer block linears in FP8 (e4m3 weights with per-channel scales, activations scaled "
                        "per row; CUDA build on Ada/Hopper)");
          break;
        case ModelFlag::Images:
          sub->add_option("-i,--image", req.images,
                          fmt::format("input image (PNG or JPEG) to {}; up to {}", entry.image_mode, entry.max_images) +
                              (entry.max_images > 1 ? ", repeat the flag" : ""))
              ->check(non_empty());
          break;
        case ModelFlag::Strength:
          sub->add_option("--strength", req.strength,
                          "image-to-image: the share of the schedule run on the noised --image (1: all of it)" +
                              dflt("strength"))
              ->check(finite_number(0, true, 1));
          break;
        case ModelFlag::ImageCrf:
          sub->add_option("--image-crf", req.image_crf,
                          "image-to-video: the --image is first re-encoded as one H.264 frame at this CRF, as the "
                          "model was trained (0: not re-encoded)" + dflt("image_crf"))
              ->check(integer_in(0, 51));
          break;
        case ModelFlag::Video:
          sub->add_option("-F,--num-frames", req.num_frames, "video frames" + dflt("num_frames"))
              ->check(setting("num_frames"));
          sub->add_option("--frame-rate,--fps", req.frame_rate, "frames per second" + dflt("frame_rate"))
              ->check(setting("frame_rate"));
          sub->add_flag("--save-frames", req.save_frames,
                        "also write each frame as PNG (folder NAME.frames/) and the audio as NAME.wav");
          break;
      }
    }
    sub->add_option("-s,--seed", req.seed, "noise seed (CPU generator)")->capture_default_str()->check(setting("seed"));
    sub->add_option("-b,--batch-count", req.batch, "outputs per prompt")->capture_default_str()->check(setting("batch"));
    sub->add_option("--max-sequence-length", req.max_sequence_length, "prompt tokens" + dflt("max_sequence_length"))
        ->check(setting("max_sequence_length"));
    const bool video = std::count(entry.flags.begin(), entry.flags.end(), ditgen::pipeline::ModelFlag::Video) > 0;
    sub->add_option("-o,--output,--save-path", req.output,
                    std::string("output ") + (video ? ".mp4" : ".png") +
                        " file, or a folder for an auto-named one (default: current folder)")
        ->check(non_empty());
    sub->add_option("--dtype", req.dtype, "bf16, fp16, fp32 or auto (bf16 on GPU, fp32 on CPU)")->capture_default_str();
    sub->add_option("--device", req.device, "cuda, cpu or auto")->capture_default_str();
    sub->add_option("--warmup", req.warmup, "untimed full runs before the timed ones")->capture_default_str()
        ->check(setting("warmup"));
    sub->add_option("--warmup-steps", req.warmup_steps, "steps per warmup run (default: --steps)")
        ->check(setting("warmup_steps"));
    sub->add_option("--repeat", req.repeat, "timed runs; latencies are their mean")->capture_default_str()
        ->check(setting("repeat"));
    sub->add_flag("--track-memory,--mem", req.track_memory, "reset peak memory before warmup and print the peak");
    cmd->gpu_memory_limit_opt =
        sub->add_option("--gpu-memory-limit", req.gpu_memory_limit.gib,
                        "GiB of GPU memory each rank's allocator may take (fractional allowed; default: the card's, "
                        "or $DITGEN_GPU_MEMORY_LIMIT): ranks sharing a GPU, a small card emulated on a large one")
            ->type_name("GIB")
            ->check(finite_number(0, true, 1e5));
    sub->add_option("--profile", req.profile_dir,
                    "folder for a profile of each rank's first timed denoising step: Chrome trace "
                    "(trace_rank{r}.json) and time per kernel class and top kernels (profile_rank{r}.md)")
        ->check(non_empty());
    sub->add_flag("--allow-nonfinite", req.allow_nonfinite,
                  "keep going when latents or pixels become NaN/Inf (default: stop with an error naming the step)");
    sub->add_option("--weight-seed", req.weight_seed, "seed of the random weights")->capture_default_str()
        ->check(unsigned_integer());
    sub->add_option_function<std::vector<std::string>>(
           "--lora",
           [&req, command = entry.command](const std::vector<std::string>& values) {
             req.lora.clear();
             for (const auto& v : values) req.lora.push_back(ditgen::nn::parse_lora_flag(v));
             req.lora_model = command;
           },
           "LoRA merged into the weights as they load, at adapter weight SCALE (default 1); repeat for several "
           "(they add up). diffusers/PEFT, kohya and BFL/original key layouts")
        ->type_name("FILE[:SCALE]")
        ->check(CLI::Validator(
            [](std::string& in) { return ditgen::nn::lora_flag_error(in); }, "FILE[:SCALE]"));
    sub->add_option("--trace", trace_dir,
                    "folder for each rank's named intermediates (first step) as trace_rank{r}.safetensors");
    add_attention_flag(sub, attention);
    add_cuda_graphs_flag(sub, cuda_graphs);
    sub->add_flag("--parallel-text,--parallel-text-encoder", req.parallel_text,
                  "text encoder tensor-parallel over all ranks (each loads its slice)");
    sub->add_flag("--parallel-vae", req.parallel_vae, "VAE decode split by image rows over all ranks");
    sub->add_flag("--offload", req.offload,
                  "keep the transformer's blocks (and the text encoder's layers) in pinned host memory and copy each "
                  "to the GPU just ahead of its use: for cards too small for the weights (CUDA build)");
    cmd->mesh.add(sub);
    model_commands.push_back(std::move(cmd));
  }

  // ---- ditgen verify ----
  ditgen::VerifyRequest vreq;
  std::string vdtype = "fp32", vdevice = "cpu";
  MeshFlags verify_mesh;
  auto* verify = app.add_subcommand("verify", "Check a golden case folder against our implementation");
  verify->add_option("case", vreq.dir, "case folder (config.json, io.safetensors, weights)")->required()
      ->check(non_empty());
  verify->add_option("--kind", vreq.kind, "case kind, when the folder name does not tell");
  verify->add_flag("--skip-missing", vreq.skip_missing, "a missing case folder is a skip (exit 77), not an error");
  verify->add_option("--tolerance", vreq.options.tolerance, "relative-error bound (default: per kind)")
      ->check(finite_number(0, true, 1e6));
  verify->add_option("--dtype", vdtype, "fp32, bf16 or fp16")->capture_default_str();
  verify->add_option("--device", vdevice, "cpu or cuda")->capture_default_str();
  verify_mesh.add(verify);
  verify->add_flag("--parallel-text,--parallel-text-encoder", vreq.options.parallel_text,
                   "text-encoder cases: the encoder tensor-parallel over all ranks (TE-P)");
  add_attention_flag(verify, attention);
  verify->add_option("--trace", trace_dir, "folder for each rank's named intermediates");
  verify->add_flag("--parallel-vae", vreq.options.parallel_vae,
                   "VAE cases: the decode split by image rows over all ranks (VAE-P)");
  verify->add_flag("--fp8", vreq.options.fp8,
                   "transformer cases: the block linears in FP8 (CUDA); reports relative error and cosine");
  verify->add_flag("--offload", vreq.options.offload,
                   "transformer, text-encoder and cache cases: the blocks streamed from host memory (on the CPU "
                   "through host copies: a check of the mechanism)");

  // ---- ditgen trace-diff ----
  std::string trace_a, trace_b;
  double trace_tol = 0;
  auto* trace_diff = app.add_subcommand("trace-diff", "Compare two --trace files tensor by tensor");
  trace_diff->add_option("a", trace_a, "trace_rank{r}.safetensors of one run")->required()->check(CLI::ExistingFile);
  trace_diff->add_option("b", trace_b, "the same of another run")->required()->check(CLI::ExistingFile);
  trace_diff->add_option("--tolerance", trace_tol, "exit 1 when a relative error exceeds this")
      ->check(finite_number(0, false, 1e6));

  // ---- ditgen export-tiny ----
  std::string export_model, export_dir;
  int export_shards = 3;
  bool export_replace = false;
  std::vector<std::string> model_names;
  for (const auto& entry : ditgen::registered_models()) model_names.push_back(entry.command);
  auto* export_tiny = app.add_subcommand("export-tiny", "Write a built-in tiny model as a diffusers folder");
  export_tiny->add_option("model", export_model, "model command")->check(CLI::IsMember(model_names))->required();
  export_tiny->add_option("dir", export_dir, "output folder (new or empty)")->required()->check(non_empty());
  export_tiny->add_option("--shards", export_shards, "safetensors files for the transformer")->capture_default_str()
      ->check(integer_in(1, 64));
  export_tiny->add_flag("--replace", export_replace, "replace an existing folder (its old files go)");

  int code = 0;
  try {
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      const int rc = app.exit(e);  // prints help or the error
      if (rc != 0 && launch.world > 1) ditgen::comm::abort_job(rc);
      ditgen::comm::shutdown();
      return rc;
    }
    const std::string level = log_level_opt->count() == 0 && verbose ? "debug" : log_level;  // -v: debug
    ditgen::runtime::configure_logging(launch.rank, launch.world, spdlog::level::from_str(level));
    ditgen::nn::set_attention_backend(attention == "flash"  ? ditgen::nn::AttentionBackend::Flash
                                      : attention == "sdpa" ? ditgen::nn::AttentionBackend::Sdpa
                                      : attention == "fp8"  ? ditgen::nn::AttentionBackend::Fp8
                                                            : ditgen::nn::AttentionBackend::Auto);
    ditgen::nn::set_cuda_graphs(cuda_graphs == "on");
    // A malformed A/B switch (DITGEN_FUSED_RESIDUAL, DITGEN_GEMM_ROWS, DITGEN_FP8_FAST_ACCUM, DITGEN_SIDE_STREAM)
    // ends the run now.
    ditgen::nn::fused_residual_on();
    ditgen::nn::gemm_row_limit();
    ditgen::nn::fp8_fast_accumulation();
    ditgen::nn::side_streams_on();
    if (!trace_dir.empty()) ditgen::runtime::trace_enable(trace_dir);

    const ModelCommand* generate = nullptr;
    for (const auto& c : model_commands)
      if (c->app->parsed()) generate = c.get();

    // Every rank must have been asked the same thing before anything runs.
    ditgen::comm::RequestFields fields = {{"version", kVersion}, {"build", __DATE__ " " __TIME__}};
    // The memory cap from the environment too, where no flag overrides it.
    const char* env_limit = std::getenv(ditgen::pipeline::kGpuMemoryLimitEnv);
    if (generate && generate->gpu_memory_limit_opt->count() == 0 && env_limit)
      fields.emplace_back(ditgen::pipeline::kGpuMemoryLimitEnv, env_limit);
    std::optional<std::string> prompt_file_bytes;
    std::string prompt_file_error;
    double timeout_s = 300;
    for (auto* sub : app.get_subcommands()) {
      fields.emplace_back("command", sub->get_name());
      for (const auto* opt : sub->get_options()) {
        if (opt->count() == 0) continue;
        std::string v;
        for (const auto& r : opt->results()) v += (v.empty() ? "" : " ") + r;
        fields.emplace_back(opt->get_name(), v);
        if (opt->get_name() == "--comm-timeout") timeout_s = std::stod(opt->results().front());
        // The prompt file's bytes too: the same path may hold different files on different hosts. Each
        // rank reads the file once, here; its items are parsed from these very bytes below, so a file
        // changed after the ranks agreed cannot reach one of them.
        if (opt->get_name() == "--prompt-file") {
          std::string digest;
          try {
            prompt_file_bytes = ditgen::pipeline::read_prompt_file_bytes(opt->results().front());
            digest = ditgen::pipeline::prompt_file_digest_of(*prompt_file_bytes);
          } catch (const ditgen::Error& e) {
            digest = e.what();  // unreadable on this rank: the agreement names it
            prompt_file_error = e.what();
          }
          fields.emplace_back("--prompt-file contents", digest);
        }
      }
    }
    ditgen::comm::check_same_request(launch, fields, timeout_s);

    if (generate) {
      ditgen::pipeline::GenerateRequest req = generate->req;
      const bool flag_limit = generate->gpu_memory_limit_opt->count() > 0;
      req.gpu_memory_limit = ditgen::pipeline::resolve_gpu_memory_limit(
          flag_limit ? std::optional<double>(req.gpu_memory_limit.gib) : std::nullopt, env_limit);
      if (flag_limit && env_limit && *env_limit)
        spdlog::info("--gpu-memory-limit {:g} overrides {}={}", req.gpu_memory_limit.gib,
                     ditgen::pipeline::kGpuMemoryLimitEnv, env_limit);
      if (generate->prompt_opt->count() > 0) req.prompt = generate->prompt;
      if (!req.prompt_file.empty()) {
        if (!prompt_file_bytes) throw ditgen::Error(prompt_file_error);
        req.items = ditgen::pipeline::parse_prompt_file(req.prompt_file, *prompt_file_bytes);
        // Outputs the items name themselves must differ after normalising their paths, and none may be
        // the prompt file or the summary (the runner checks the auto-named ones once the model is known).
        const bool video = std::count(generate->entry->flags.begin(), generate->entry->flags.end(),
                                      ditgen::pipeline::ModelFlag::Video) > 0;
        ditgen::pipeline::check_named_outputs(req.items, req.output, req.prompt_file, video ? "mp4" : "png",
                                              req.batch, video && req.save_frames);
      }
      if (generate->negative_opt && generate->negative_opt->count() > 0) req.negative_prompt = generate->negative;
      for (const auto* o : generate->cache_flags)
        DITGEN_CHECK(o->count() == 0 || req.cache.enabled, "{} sets up the block cache; add --cache (or drop {})",
                     o->get_name(), o->get_name());
      req.mesh = generate->mesh.resolve(launch.world);
      const bool cuda = ditgen::pipeline::resolve_device(req.device, req.dtype, launch.rank).first.is_cuda();
      auto world = ditgen::comm::make_world(launch, cuda, generate->mesh.timeout_s,
                                                 ditgen::comm::comm_backend_from_name(generate->mesh.comm));
      auto ctx = ditgen::parallel::Context::create(world, req.mesh);
      ditgen::pipeline::generate(*generate->entry, req, ctx);
    } else if (verify->parsed()) {
      auto shape = verify_mesh.resolve(launch.world);
      const auto [device, dtype] = ditgen::pipeline::resolve_device(vdevice, vdtype, launch.rank);
      vreq.options.device = device;
      vreq.options.dtype = dtype;
      auto world = ditgen::comm::make_world(launch, device.is_cuda(), verify_mesh.timeout_s,
                                                 ditgen::comm::comm_backend_from_name(verify_mesh.comm));
      vreq.options.parallel = ditgen::parallel::Context::create(world, shape);
      code = ditgen::run_verify(vreq);
    } else if (trace_diff->parsed()) {
      const double worst = ditgen::runtime::trace_diff(trace_a, trace_b);
      code = trace_tol > 0 && !(worst <= trace_tol) ? 1 : 0;
    } else if (export_tiny->parsed()) {
      for (const auto& entry : ditgen::registered_models())
        if (entry.command == export_model && launch.rank == 0) entry.export_tiny(export_dir, export_shards, export_replace);
    }
  } catch (const ditgen::Error& e) {
    spdlog::error(e.what());
    code = 2;
  } catch (const std::bad_alloc&) {  // outside the runner's stages, which name themselves
    spdlog::error("out of memory: the host allocator failed (reduce --height/--width/--batch-count, or use more "
                  "ranks)");
    code = 2;
  } catch (const c10::Error& e) {  // a LibTorch failure we did not anticipate: its message, not its backtrace
    const std::string what = e.what_without_backtrace();
    if (ditgen::pipeline::is_out_of_memory(what)) {
      const auto cap = ditgen::pipeline::exhausted_gpu_memory_limit();
      spdlog::error("out of memory: {} ({}reduce --height/--width/--batch-count, or use more ranks)",
                    what.substr(0, what.find('\n')),
                    cap.set() ? "over " + cap.describe() + ": raise it, or " : "");
      code = 2;
    } else {
      spdlog::error(std::string("internal error (LibTorch): ") + what);
      code = 3;
    }
  } catch (const std::exception& e) {
    spdlog::error(std::string("internal error: ") + e.what());
    code = 3;
  }
  try {
    ditgen::runtime::trace_flush(launch.rank);
  } catch (const ditgen::Error& e) {
    spdlog::error(e.what());
  }
  if (code == 2 || code == 3) {
    if (launch.world > 1) ditgen::comm::abort_job(code);
  }
  ditgen::comm::shutdown();
  return code;
}
