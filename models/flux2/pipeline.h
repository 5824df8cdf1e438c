#pragma once
// The FLUX.2 text-to-image pipeline (flux2.md §5): prompt -> Mistral tokens -> hidden states of
// three layers -> guidance-distilled Euler loop over the transformer -> VAE decode -> PNG.
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lib/cache/step_cache.h"
#include "lib/parallel/context.h"
#include "lib/pipeline/load_options.h"
#include "lib/pipeline/model_files.h"
#include "lib/pipeline/runner.h"
#include "lib/sched/flow_match.h"
#include "lib/text/tokenizer.h"
#include "models/flux2/transformer.h"
#include "models/flux2/vae.h"
#include "models/llm/decoder.h"

namespace ditgen::flux2 {

struct SchedulerConfig {
  bool use_dynamic_shifting = true;  // FLUX.2: exponential shift with the empirical mu
  double shift = 3.0;                // used only without dynamic shifting
  static SchedulerConfig from_json(const nlohmann::json& j, const std::string& where);
  sched::Schedule schedule(int64_t steps, int64_t image_seq_len) const;
};

// Where a pipeline's weights come from and in which precision it runs.
struct LoadOptions : pipeline::LoadOptions {
  LoadOptions() = default;
  explicit LoadOptions(const pipeline::LoadOptions& o) : pipeline::LoadOptions(o) {}
  bool load_text_encoder = true;
  std::vector<int> text_layers;  // text-encoder hidden states to stack; empty = preset (10, 20, 30)
};

// FLUX.2's conditioning of one prompt batch: the stacked text-encoder states and what the transformer
// derives from them once per generation (RoPE factors, the guidance vector).
struct Conditioning : pipeline::Conditioning {
  at::Tensor prompt_embeds;  // [B, L, joint_attention_dim]
  at::Tensor txt_ids;        // [L, 4]
  // This rank's [L_loc + N_loc, head_dim/2] complex64; made by the first predict() when the prompt was
  // encoded before the transformer was loaded (memory plan), then kept for every later step and run.
  mutable at::Tensor rope;
  at::Tensor guidance;  // [B] float32
};

// Reference images (--image, editing) as the transformer sees them: appended after the noisy image tokens.
struct ReferenceImages : pipeline::Conditioning {
  at::Tensor latents;  // [1, N_ref, 4L] packed, batch-norm normalised, in the pipeline dtype
  at::Tensor ids;      // [N_ref, 4] int64: (10 (k + 1), row, col, 0) for reference k
};

// Reference image processing as Flux2Pipeline (flux2.md 5.5): an image over 1024^2 px is resized to that
// area, then both sides are floored to multiples of `multiple` and the image center-cropped to them.
// [H, W, 3] uint8 -> [H', W', 3] uint8. Refuses (naming `where`) a side under 64 px or an aspect ratio over 8.
at::Tensor prepare_reference(const at::Tensor& pixels, int64_t multiple, const std::string& where);
// The refusals of prepare_reference alone (the runner's check before anything loads).
void check_reference(const at::Tensor& pixels, const std::string& where);

class Pipeline : public pipeline::ModelBase {
 public:
  Pipeline(const LoadOptions& options, std::shared_ptr<parallel::Context> ctx);

  // [B, L, 3*hidden] in the pipeline dtype.
  at::Tensor encode_prompts(const std::vector<std::string>& prompts, int64_t max_sequence_length) const;
  // The conditioning for given prompt embeddings at the settings' size and guidance.
  std::shared_ptr<Conditioning> condition(const at::Tensor& prompt_embeds, const pipeline::Settings& s) const;

  // pipeline::Model
  // Pixels per packed token side (2 * VAE scale factor): H and W must be multiples of it.
  int64_t pixel_multiple() const override { return 2 * vae_->scale_factor(); }
  std::string cfg_off_reason(const pipeline::Settings&) const override {
    return "FLUX.2 is guidance-distilled (one transformer call per step, the guidance is embedded)";
  }
  nlohmann::json report_settings(const pipeline::Settings& s) const override {
    return {{"guidance", s.guidance}};
  }
  std::shared_ptr<pipeline::Conditioning> encode(const std::vector<std::string>& prompts,
                                                 const pipeline::Settings& s) const override;
  // Noise drawn with a CPU generator from the seed (as cache-dit's default --gen-device) in the
  // patchified layout [B, 4*latent_channels, H/(2 sf), W/(2 sf)], then packed: one stream [B, h*w, C_p].
  pipeline::Latents initial_latents(const pipeline::Settings& s) const override;
  sched::Schedule schedule(const pipeline::Settings& s) const override;
  pipeline::Latents predict(const pipeline::Latents& latents, float t, const pipeline::Conditioning& cond,
                            int branch, const pipeline::Settings& s) const override;
  // Packed latents -> images [B, 3, H, W] float in [0, 1].
  pipeline::Media decode(const pipeline::Latents& latents, const pipeline::Settings& s) const override;
  void release(pipeline::Component c) override;
  // Editing: the output size defaults to the first reference's (processed) size.
  std::pair<int64_t, int64_t> image_size(const pipeline::Settings& s) const override;
  // Each reference VAE-encoded (the posterior's mode), patchified, batch-norm normalised and packed, with
  // time coordinates 10, 20, ... (ReferenceImages).
  std::shared_ptr<const pipeline::Conditioning> encode_images(const pipeline::Settings& s) const override;
  // Refuses cache settings that cannot run (naming the flag) before any work.
  void check(const pipeline::Settings& s) const override;
  // One transformer call per step at the settings' size and prompt length (models/flux2/work.h).
  pipeline::StepWork step_work(const pipeline::Settings& s) const override;

  const Transformer& transformer() const { return *transformer_; }

  // Builds the pipeline from explicit configs and weight sources (used by the golden cases); `offload`: the
  // transformer's blocks streamed (--offload).
  Pipeline(const TransformerConfig& tcfg, const nn::Weights& transformer_weights, const VaeConfig& vcfg,
           const nn::Weights& vae_weights, const SchedulerConfig& scfg,
           std::shared_ptr<parallel::Context> ctx, bool with_encoder = false, bool offload = false);

 private:
  std::shared_ptr<parallel::Context> ctx_;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_ = at::kCPU;
  std::vector<int> text_layers_;
  std::shared_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<llm::DecoderLM> text_encoder_;
  std::unique_ptr<Transformer> transformer_;
  TransformerConfig tcfg_;  // the transformer's config, also while it is deferred or released
  std::unique_ptr<Vae> vae_;
  bool parallel_vae_ = false;  // VAE-P: decode() splits the image rows over the world
  SchedulerConfig scheduler_;
  nlohmann::json te_json_;  // the text encoder's config as loaded (export writes it back)

  friend void export_tiny(const std::string& dir, int transformer_shards, bool replace);
};

// Image token ids (t, h, w, l) = (0, row, col, 0) for an h x w grid: [h*w, 4] int64.
at::Tensor image_ids(int64_t h, int64_t w);
// Text token ids (0, 0, 0, l): [L, 4] int64.
at::Tensor text_ids(int64_t length);

// Writes the built-in tiny model as a diffusers-format folder (model_index.json, transformer/ in
// `transformer_shards` safetensors files with an index, vae/, text_encoder/ with Mistral3's
// `language_model.model.` names, tokenizer/, scheduler/): the same weights as the built-in model.
void export_tiny(const std::string& dir, int transformer_shards, bool replace);

// The registry entry of `ditgen flux2`.
pipeline::ModelEntry model_entry();
// Its command, output stem and diffusers pipeline class (models/flux2/entry.cpp).
pipeline::ModelIdentity identity();

}  // namespace ditgen::flux2
