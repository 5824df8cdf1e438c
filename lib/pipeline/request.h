#pragma once
// What the CLI asks the engine for (model-independent). Zero / empty fields mean "the model
// preset's default" (configs/<model>.json).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lib/cache/options.h"
#include "lib/comm/mesh.h"
#include "lib/nn/lora.h"
#include "lib/pipeline/memory_limit.h"
#include "lib/pipeline/prompt_file.h"

namespace ditgen::pipeline {

struct GenerateRequest {
  std::string model_path;       // diffusers folder; empty = built-in tiny model
  bool random_weights = false;  // the real config from the preset, seeded random weights (benchmarks)
  uint64_t weight_seed = 0;

  std::optional<std::string> prompt;           // unset = preset prompt; an empty one is empty (as upstream)
  std::optional<std::string> negative_prompt;  // true-CFG models; unset = preset (an empty one counts)
  int64_t batch = 1;                           // images (videos) per prompt
  int64_t height = 0, width = 0, steps = 0;
  int64_t num_frames = 0;      // video models: frames of the video
  double frame_rate = 0;       // video models: frames per second (<= 0: preset)
  std::string aspect_ratio;    // a preset size name ("16:9"); exclusive with height/width
  double guidance = -1;        // < 0: preset
  double true_cfg_scale = -1;  // < 0: preset
  double audio_guidance = -1;  // LTX-2: CFG scale of the audio stream (< 0: preset, else the video's)
  uint64_t seed = 0;
  int64_t max_sequence_length = 0;
  std::vector<int> text_encoder_out_layers;  // hidden states fed to the DiT; empty = preset

  // --image (models with ModelFlag::Images): conditioning images, PNG or JPEG, in the order given.
  std::vector<std::string> images;
  double strength = -1;  // --strength (image-to-image): the share of the schedule run; < 0: preset
  int image_crf = -1;    // --image-crf (image-to-video): H.264 CRF of the image's re-encoding; < 0: preset

  // --prompt-file: one generation per item (the fields above are the items' defaults); empty: one run.
  std::string prompt_file;
  std::vector<PromptItem> items;

  std::string output;           // a .png (.mp4 for videos) path, or a folder for an auto-named file
  bool save_frames = false;     // videos: also each frame as PNG and the audio as WAV
  std::string dtype = "auto";   // bf16 | fp16 | fp32 | auto (bf16 on GPU, fp32 on CPU)
  std::string device = "auto";  // cpu | cuda | auto
  int warmup = 1;               // full untimed runs before the timed ones (cache-dit default)
  int warmup_steps = 0;         // steps of each warmup run; 0 = --steps
  int repeat = 1;               // timed runs; the report gives their mean
  bool track_memory = false;
  GpuMemoryLimit gpu_memory_limit;  // --gpu-memory-limit (or its variable): each rank's allocator cap
  std::string profile_dir;      // --profile: each rank's first timed denoising step profiled into this folder
  bool allow_nonfinite = false;  // keep going (and write) when latents or pixels are NaN/Inf

  comm::MeshShape mesh;         // resolved from --parallel / --ulysses / --ring / --tp / --cfg
  bool parallel_text = false;   // --parallel-text: the text encoder tensor-parallel over the ranks
  bool parallel_vae = false;    // --parallel-vae: the VAE decode split by rows over the ranks
  bool fp8 = false;             // --fp8: the transformer blocks' linears in e4m3 (CUDA, FP8 tensor cores)
  // --offload: the transformer's blocks (and the text encoder's layers) in pinned host memory, streamed to
  // the GPU ahead of use (lib/nn/offload.h); CUDA only.
  bool offload = false;
  // --lora FILE[:SCALE] (repeatable, in order; they add up), merged into the weights as they load, and
  // the model command that took them: its key layouts are the ones read (lib/nn/lora.h).
  std::vector<nn::LoraFile> lora;
  std::string lora_model;
  cache::Options cache;         // --cache and its flags (models with ModelFlag::Cache)
};

}  // namespace ditgen::pipeline
