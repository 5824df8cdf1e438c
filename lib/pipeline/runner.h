#pragma once
// The shared runner (DESIGN §10): one generate command for every registered model. A model is a
// pipeline::Model plus a registry entry (models/registry.cpp); this file drives it.
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lib/io/image_read.h"
#include "lib/io/report.h"
#include "lib/parallel/context.h"
#include "lib/pipeline/model.h"
#include "lib/pipeline/request.h"

namespace ditgen::pipeline {

// Flags a model command takes beyond the common ones (the CLI adds only those its model lists).
// Guidance: FLUX.2's embedded guidance; CfgGuidance: true-CFG scales per stream (--guidance for the
// video, --audio-guidance); Video: --num-frames, --frame-rate, --save-frames and MP4 output.
// Cache: --cache and its flags (the model runs its block lists through lib/cache). Fp8: --fp8 (the
// transformer's block linears in e4m3, lib/nn/linear.h). Images: --image (up to ModelEntry::max_images);
// Strength: --strength (image-to-image); ImageCrf: --image-crf (image-to-video).
enum class ModelFlag {
  Guidance,
  NegativePrompt,
  TrueCfgScale,
  TextEncoderOutLayers,
  AspectRatio,
  CfgGuidance,
  Video,
  Cache,
  Fp8,
  Images,
  Strength,
  ImageCrf
};

struct ModelEntry {
  std::string command;  // "flux2", "qwen-image"
  std::string summary;  // one help line
  std::vector<ModelFlag> flags;
  // configs/<model>.json: "defaults" and "tiny.defaults" show in the help; "aspect_ratios" (name ->
  // [width, height]) serve --aspect-ratio.
  nlohmann::json presets;
  // The model the request names: the built-in tiny one, --random-weights or --model-path.
  std::function<std::unique_ptr<Model>(const GenerateRequest&, const at::Device&, at::ScalarType,
                                       std::shared_ptr<parallel::Context>)>
      load;
  // Writes the built-in tiny model as a diffusers folder with its presets (`ditgen export-tiny <command>
  // DIR`); a non-empty DIR only with `replace`.
  std::function<void(const std::string& dir, int transformer_shards, bool replace)> export_tiny;
  // With ModelFlag::Images: how many --image a run may give, and what the model does with them, as output
  // names say it ("edit", "i2v", "img2img": flux2_edit.1024x1024.C0.png).
  int max_images = 0;
  std::string image_mode;
  // Refuses an input image this model cannot take (too small, too elongated), naming its file; runs on
  // every rank before anything loads. Optional.
  std::function<void(const io::InputImage&)> check_image;
};

// The request with the model's presets filled in; with conditioning `images`, the presets' "image"
// section first overrides the defaults (an image-to-video run has its own prompt), and the model may
// derive the size from them (Model::image_size).
Settings resolve_settings(const GenerateRequest& request, const Model& model, const at::Device& device,
                          at::ScalarType dtype, const std::vector<io::InputImage>& images = {});

// The conditioning of each CFG branch this rank runs: both when the branches run one after the
// other, only its own under --cfg 2 (the other half encodes the other prompt), `uncond` null without CFG.
// `text_on_all_ranks` (TE-P: the text encoder is one collective over every rank): under --cfg 2 every
// rank then encodes both branches, in the same order, and keeps its own.
struct Branches {
  std::shared_ptr<Conditioning> cond, uncond;
  std::shared_ptr<Conditioning> both;  // set by join_branches: one transformer call for the two
};
Branches encode_branches(const Model& model, const Settings& s, const parallel::Context& ctx,
                         bool text_on_all_ranks = false);
// Where this rank runs both branches (CFG on, no cfg axis) and the model stacks them (Model::join_branches):
// sets b.both and s.joint_cfg, so that `denoise` makes one transformer call a step.
void join_branches(const Model& model, Branches& b, Settings& s, const parallel::Context& ctx);

struct DenoiseResult {
  Latents latents;
  sched::Schedule schedule;
  std::vector<double> step_seconds;
};
using StepCallback = std::function<void(int64_t step, double seconds)>;

// The Euler loop over the model's schedule from `latents`: one transformer call per step, or with true
// CFG two (one after the other, or one per CFG half with one exchange per step), combined by the model.
// `dt * v` is evaluated in v's dtype, added in fp32 and rounded back, as the reference pipelines do.
DenoiseResult denoise(const Model& model, const Settings& s, const Branches& branches, Latents latents,
                      const parallel::Context& ctx, const StepCallback& on_step = nullptr);

// `ditgen <model>`: load, check the settings on every rank, warm up, generate, then (after the last
// collective) write the outputs and the report on rank 0. Returns the report.
// The memory plan: the prompts are encoded once for the warm-up and the timed runs (same settings, same
// embeddings), the text encoder is released, then the transformer is read (the loaders defer it), and it
// is released before the last run's VAE decode; the peak is the largest stage, not the sum.
io::RunReport generate(const ModelEntry& entry, const GenerateRequest& request,
                       std::shared_ptr<parallel::Context> ctx);

}  // namespace ditgen::pipeline
