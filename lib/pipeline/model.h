#pragma once
// What a model gives the shared runner (DESIGN §10): its presets, loading, prompt encoding, initial
// latents, its schedule, one transformer call, how its guidance combines the CFG branches, and
// decoding. The runner (lib/pipeline/runner.h) owns everything else: settings, device, the
// denoising loop with CFG (sequential or on the mesh's cfg axis), warm-up and repeats, progress,
// timings, memory, outputs and the report.
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lib/cache/options.h"
#include "lib/cache/step_cache.h"
#include "lib/comm/mesh.h"
#include "lib/io/image_read.h"
#include "lib/pipeline/step_work.h"
#include "lib/sched/flow_match.h"

namespace ditgen::nn {
class BlockStreamer;
struct OffloadStats;
}  // namespace ditgen::nn

namespace ditgen::pipeline {

struct Conditioning;

// One generation's settings: the request with every unset field taken from the model's presets.
// Fields a model has no flag for keep their preset value (or stay unused).
struct Settings {
  std::string prompt;
  std::string negative_prompt;
  bool has_negative_prompt = false;  // a negative prompt was given (an empty one counts, as upstream)
  int64_t height = 0, width = 0, steps = 0, batch = 1, max_sequence_length = 0;
  int64_t num_frames = 1;     // video models
  double frame_rate = 0;      // video models: frames per second
  double guidance = 0;        // FLUX.2: the embedded guidance scale; LTX-2: the video stream's CFG scale
  double audio_guidance = 0;  // LTX-2: the audio stream's CFG scale
  double true_cfg_scale = 1;  // Qwen-Image: true classifier-free guidance
  uint64_t seed = 0;
  bool allow_nonfinite = false;  // do not stop on NaN/Inf latents or pixels
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  cache::Options cache;  // DBCache / TaylorSeer / step mask (lib/cache); disabled by default
  // Conditioning images (--image), as read; empty for text-only runs.
  std::vector<io::InputImage> images;
  double strength = 1;    // image-to-image: the share of the schedule that runs on the noised image
  int64_t image_crf = 0;  // image-to-video: CRF of the image's H.264 re-encoding first (0: none)
  // The model's encoding of `images` for this generation (Model::encode_images), opaque to the runner.
  std::shared_ptr<const Conditioning> image_conditioning;
  // Both CFG branches run as one transformer call of twice the batch (Model::join_branches, Branches::both).
  bool joint_cfg = false;
};

// A model's encoding of the prompts of one CFG branch (opaque to the runner).
struct Conditioning {
  virtual ~Conditioning() = default;
};

// The latent streams one denoising loop updates (one for image models; video and audio for LTX-2).
using Latents = std::vector<at::Tensor>;

// Decoded outputs, float32 in [0, 1]: images [B, 3, H, W] from image models; video models give
// videos [B, F, 3, H, W] at `fps` and, with a sound track, audio [B, channels, samples] in [-1, 1] at
// `sample_rate` Hz.
struct Media {
  at::Tensor images;
  at::Tensor videos;
  at::Tensor audio;
  double fps = 0;
  int sample_rate = 0;
  // Seconds of the decode's parts worth reporting on their own (LTX-2: "video_vae", "audio_vae_vocoder").
  std::vector<std::pair<std::string, double>> decode_seconds;
};

// The components the memory plan frees once nothing needs them again.
enum class Component { TextEncoder, Transformer };

class Model {
 public:
  virtual ~Model() = default;

  // Output-name stem and report name: "flux2", "qwen_image-tiny", ...
  virtual const std::string& name() const = 0;
  // The preset's defaults (configs/<model>.json "defaults" or "tiny.defaults").
  virtual const nlohmann::json& defaults() const = 0;
  // H and W must be multiples of this.
  virtual int64_t pixel_multiple() const = 0;
  // Refuses settings this model cannot run, naming the flag (called on every rank before any work).
  virtual void check(const Settings& s) const {}
  // Why this run has no negative (unconditional) branch, or "" when it runs true CFG.
  virtual std::string cfg_off_reason(const Settings& s) const = 0;
  // Model-specific settings for the report (e.g. negative prompt, CFG scale).
  virtual nlohmann::json report_settings(const Settings& s) const { return nlohmann::json::object(); }

  // The output size conditioning images imply when --height/--width are not given (FLUX.2: the first
  // reference's), or {0, 0}: the presets' size.
  virtual std::pair<int64_t, int64_t> image_size(const Settings& s) const { return {0, 0}; }
  // Encodes s.images once per generation, after the prompts (VAE encoder; --parallel-vae splits it by
  // rows); the runner passes the result back in s.image_conditioning to initial_latents, schedule and
  // predict. Only called with images.
  virtual std::shared_ptr<const Conditioning> encode_images(const Settings& s) const { return nullptr; }

  // One branch's conditioning for `prompts` (one per batch item).
  virtual std::shared_ptr<Conditioning> encode(const std::vector<std::string>& prompts,
                                               const Settings& s) const = 0;
  // The initial noise in the loop's layout, drawn from s.seed.
  virtual Latents initial_latents(const Settings& s) const = 0;
  virtual sched::Schedule schedule(const Settings& s) const = 0;
  // One transformer call: the velocity of every stream at schedule timestep `t` (0..1000) under one
  // branch's conditioning. `branch` is 0 (conditional) or 1 (unconditional), for per-branch state.
  virtual Latents predict(const Latents& latents, float t, const Conditioning& cond, int branch,
                          const Settings& s) const = 0;
  // Combines the conditional and unconditional velocities (only called when cfg_off_reason is "").
  virtual Latents guide(const Latents& cond, const Latents& uncond, const Settings& s) const;
  // Both branches' conditioning as one of twice the batch, [cond items | uncond items], for a model whose
  // transformer then runs the two branches in one call (predict with branch 0 on latents repeated twice
  // along the batch), or null: the branches run one after the other (the default; and where the two
  // encodings cannot be stacked).
  virtual std::shared_ptr<Conditioning> join_branches(const Conditioning& cond, const Conditioning& uncond,
                                                      const Settings& s) const {
    return nullptr;
  }
  virtual Media decode(const Latents& latents, const Settings& s) const = 0;

  // Checkpoint bytes this rank read, per component ("transformer", "text_encoder", "vae").
  virtual std::map<std::string, uint64_t> bytes_read() const = 0;

  // The memory plan (README "Memory plan"): the runner encodes the prompts once, releases the text
  // encoder, then calls load_deferred() (a model loaded with its transformer deferred reads it now, so the
  // text encoder and the transformer never hold memory at the same time), and releases the transformer
  // before the last VAE decode. Using a released component is an error. The defaults keep everything.
  virtual void load_deferred() {}
  virtual void release(Component c) {}

  // Called by `denoise` at the start of every step (0 .. steps-1), before the step's transformer
  // calls: per-generation state such as the block cache follows the steps through it.
  virtual void on_step(int64_t step, int64_t steps) const {}
  // What the block cache did in the last generation (per list and branch: cached steps, differences,
  // decisions; lib/cache/dbcache.h), or null when it was off.
  virtual nlohmann::json cache_report() const { return nullptr; }
  // Its one-line summary for rank 0 ("" when it was off).
  virtual std::string cache_summary() const { return ""; }
  // --offload: what each streamed component held and copied (lib/nn/offload.h: bytes per step, copy time
  // hidden behind compute), {"transformer": {...}, "text_encoder": {...}}, or null when off; and its summary
  // for rank 0 ("" when off).
  virtual nlohmann::json offload_report() const { return nullptr; }
  virtual std::string offload_summary() const { return ""; }
  // --offload on a GPU: the device bytes that blocks loaded from now on leave free next to their copy
  // buffers (the step's activations; the rest stays resident where it fits, lib/nn/offload.h).
  virtual void set_offload_reserve(int64_t bytes) {}

  // The transformer work of one denoising step of the whole job (every CFG branch, the whole batch, not
  // per rank; lib/pipeline/step_work.h), for the report's "work_per_step" and the benchmark floor. Needs
  // no loaded transformer. Empty (the default) when a model does not count it.
  virtual StepWork step_work(const Settings& s) const { return {}; }
};

// What every model keeps the same way: its name and defaults (lib/pipeline/model_files.h), the checkpoint
// bytes it read, the transformer load the memory plan defers, and the block cache of the generation in
// progress. A model derives from it and sets `load_transformer_` while its transformer's load waits.
class ModelBase : public Model {
 public:
  const std::string& name() const override { return name_; }
  const nlohmann::json& defaults() const override { return defaults_; }
  std::map<std::string, uint64_t> bytes_read() const override { return bytes_read_; }
  void load_deferred() override;
  void on_step(int64_t step, int64_t steps) const override;
  nlohmann::json cache_report() const override { return cache_.report(); }
  std::string cache_summary() const override { return cache_.summary(); }
  nlohmann::json offload_report() const override;
  std::string offload_summary() const override;
  void set_offload_reserve(int64_t bytes) override { offload_reserve_ = bytes; }

 protected:
  // `separate_cfg_cache`: the CFG branches have block-cache state of their own (lib/cache/step_cache.h).
  explicit ModelBase(bool separate_cfg_cache) : cache_(separate_cfg_cache) {}

  // With `offload_` (--offload): a new streamer for `component`'s blocks ("transformer", "text_encoder") on
  // `device`, whose counts the report shows (the transformer's per step of the last run); else null.
  std::shared_ptr<nn::BlockStreamer> offload_streamer(const std::string& component, const at::Device& device);
  bool offload_ = false;
  // Kept free on the device next to the resident blocks (set_offload_reserve; < 0: the streamer's default).
  int64_t offload_reserve_ = -1;

  std::string name_;
  nlohmann::json defaults_;
  std::map<std::string, uint64_t> bytes_read_;
  std::function<void()> load_transformer_;  // set while the transformer's load is deferred
  mutable cache::StepCache cache_;

 private:
  struct Streamed {  // a component's streamer (gone once the component is released) and its counts (kept)
    std::string component;
    std::weak_ptr<nn::BlockStreamer> streamer;
    std::shared_ptr<nn::OffloadStats> stats;
  };
  std::vector<Streamed> streamed_;
  // The counts with every finished copy's time, for the report (the streamer if it is still there).
  std::vector<std::pair<std::string, nn::OffloadStats>> offload_stats() const;
};

// The file in a model folder that carries ditgen's presets (written by export-tiny, so that an exported
// tiny model runs with its own defaults), and the defaults a folder's run uses: its presets file's
// "defaults" when there is one, else `fallback` (the real model's).
constexpr const char* kPresetsFile = "ditgen_presets.json";
nlohmann::json folder_defaults(const std::string& model_path, const nlohmann::json& fallback);

// The transformer's timestep input for schedule timestep `t`: quantised to the latents' dtype before
// the division by 1000, as the reference pipelines do ([B] in `dtype` on `device`).
at::Tensor model_timestep(float t, int64_t batch, at::ScalarType dtype, const at::Device& device);

}  // namespace ditgen::pipeline
