#pragma once
// The Qwen-Image text-to-image pipeline (qwen-image.md §5): prompt -> Qwen chat template -> Qwen2.5-VL
// final hidden states (template prefix dropped) -> Euler loop over the MMDiT with true classifier-free
// guidance and its norm-preserving rescale -> one-frame causal VAE decode -> PNG.
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
#include "models/llm/decoder.h"
#include "models/qwen_image/transformer.h"
#include "models/qwen_image/vae.h"

namespace ditgen::qwen_image {

// Qwen-Image's scheduler values (scheduler/scheduler_config.json keys that are absent take these).
sched::FlowMatchConfig scheduler_defaults();

using LoadOptions = pipeline::LoadOptions;

// One CFG branch's conditioning: the prompt states, their mask and the RoPE factors for this length.
struct Conditioning : pipeline::Conditioning {
  at::Tensor embeds;  // [B, L, joint_attention_dim]
  at::Tensor mask;    // [B, L] int64, or undefined when every row is real
  // This rank's [L_loc + N_loc, head_dim/2] complex64; made by the first predict() when the prompt was
  // encoded before the transformer was loaded (memory plan), then kept for every later step and run.
  mutable at::Tensor rope;
};

// Image-to-image (--image): the input image's posterior, encoded once per generation; each run samples it
// (img2img_initial_latents).
struct InputImageLatent : pipeline::Conditioning {
  Vae::Posterior posterior;  // mean and std [1, z_dim, 1, H / sf, W / sf] in the pipeline dtype
};

class Pipeline : public pipeline::ModelBase {
 public:
  Pipeline(const LoadOptions& options, std::shared_ptr<parallel::Context> ctx);
  // From explicit configs and weight sources (the golden cases); `with_encoder`: the VAE's encoder too.
  Pipeline(const TransformerConfig& tcfg, const nn::Weights& transformer_weights, const VaeConfig& vcfg,
           const nn::Weights& vae_weights, const sched::FlowMatchConfig& scfg,
           std::shared_ptr<parallel::Context> ctx, bool with_encoder = false);

  // The conditioning for given prompt states at the settings' image size.
  std::shared_ptr<Conditioning> condition(const at::Tensor& embeds, const at::Tensor& mask,
                                          const pipeline::Settings& s) const;
  // Image-to-image initial latents [B, h*w, 4 z_dim] from given draws: the posterior's sample noise
  // [1, z_dim, 1, 2h, 2w] and the noise [B, 1, z_dim, 2h, 2w] (initial_latents draws them from the seed;
  // the golden case injects upstream's). Needs s.image_conditioning (encode_images).
  at::Tensor img2img_latents(const pipeline::Settings& s, const at::Tensor& sample_noise,
                             const at::Tensor& noise) const;
  // The packed latent grid (rows, columns) for an image size: H / (2 * VAE scale factor).
  std::pair<int64_t, int64_t> token_grid(const pipeline::Settings& s) const;

  // pipeline::Model
  int64_t pixel_multiple() const override { return 2 * vae_->scale_factor(); }
  void check(const pipeline::Settings& s) const override;
  // True CFG runs when a negative prompt is given and the scale is > 1 (§5.1, as upstream).
  std::string cfg_off_reason(const pipeline::Settings& s) const override;
  nlohmann::json report_settings(const pipeline::Settings& s) const override;
  std::shared_ptr<pipeline::Conditioning> encode(const std::vector<std::string>& prompts,
                                                 const pipeline::Settings& s) const override;
  // Image-to-image (QwenImageImg2ImgPipeline): the image resized to the output size as upstream's image
  // processor does, scaled to [-1, 1] and encoded to its posterior (--parallel-vae splits it by rows).
  std::shared_ptr<const pipeline::Conditioning> encode_images(const pipeline::Settings& s) const override;
  // Noise [B, 1, z_dim, lh, lw] drawn in the pipeline dtype with a CPU generator from the seed, packed
  // into [B, (lh/2)(lw/2), 4 z_dim] (§5.2). Image-to-image: the same generator first draws the posterior's
  // sample, then that noise, which noises the sampled image latent at the first kept sigma.
  pipeline::Latents initial_latents(const pipeline::Settings& s) const override;
  // Image-to-image keeps the last --strength share of the steps (img2img_schedule).
  sched::Schedule schedule(const pipeline::Settings& s) const override;
  pipeline::Latents predict(const pipeline::Latents& latents, float t, const pipeline::Conditioning& cond,
                            int branch, const pipeline::Settings& s) const override;
  // comb = uncond + g (cond - uncond), rescaled per token to the conditional velocity's norm (§5.4).
  pipeline::Latents guide(const pipeline::Latents& cond, const pipeline::Latents& uncond,
                          const pipeline::Settings& s) const override;
  pipeline::Media decode(const pipeline::Latents& latents, const pipeline::Settings& s) const override;
  void release(pipeline::Component c) override;
  // A forward per CFG branch, each at its prompt's token count (models/qwen_image/work.h).
  pipeline::StepWork step_work(const pipeline::Settings& s) const override;

  const Transformer& transformer() const { return *transformer_; }

 private:
  std::shared_ptr<parallel::Context> ctx_;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_ = at::kCPU;
  std::shared_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<llm::DecoderLM> text_encoder_;
  std::unique_ptr<Transformer> transformer_;
  TransformerConfig tcfg_;  // the transformer's config, also while it is deferred or released
  std::unique_ptr<Vae> vae_;
  bool parallel_vae_ = false;  // VAE-P: decode() splits the image rows over the world
  sched::FlowMatchConfig scheduler_;
  nlohmann::json te_json_;  // the text encoder's config as loaded (export writes it back)

  friend void export_tiny(const std::string& dir, int transformer_shards, bool replace);
};

// Writes the built-in tiny model as a diffusers-format folder (model_index.json, transformer/ in
// `transformer_shards` safetensors files with an index, vae/, text_encoder/ with Qwen2.5-VL's
// `model.language_model.` names, tokenizer/, scheduler/): the same weights as the built-in model.
void export_tiny(const std::string& dir, int transformer_shards, bool replace);

// The registry entry of `ditgen qwen-image`.
pipeline::ModelEntry model_entry();
// Its command, output stem and diffusers pipeline class (models/qwen_image/entry.cpp).
pipeline::ModelIdentity identity();

}  // namespace ditgen::qwen_image
