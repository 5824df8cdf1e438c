#pragma once
// The FLUX.2 text-to-image pipeline (flux2.md §5): prompt -> Mistral tokens -> hidden states of
// three layers -> guidance-distilled Euler loop over the transformer -> VAE decode -> PNG.
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lib/io/report.h"
#include "lib/parallel/context.h"
#include "lib/pipeline/request.h"
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
struct LoadOptions {
  std::string model_path;       // empty: the built-in tiny model
  bool random_weights = false;  // real config, random weights
  uint64_t weight_seed = 0;
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  bool load_text_encoder = true;
  std::vector<int> text_layers;  // text-encoder hidden states to stack; empty = preset (10, 20, 30)
  // Optional hook that wraps each component's weight source ("transformer", "vae", "text_encoder"),
  // e.g. to record the tensors of the built-in tiny model for export.
  std::function<std::shared_ptr<nn::WeightSource>(const std::string&, std::shared_ptr<nn::WeightSource>)> wrap_source;
};

class Pipeline {
 public:
  Pipeline(const LoadOptions& options, std::shared_ptr<parallel::Context> ctx);

  // [B, L, 3*hidden] in the pipeline dtype.
  at::Tensor encode_prompts(const std::vector<std::string>& prompts, int64_t max_sequence_length) const;
  // Initial noise in the patchified latent space [B, 4*latent_channels, H/(2 sf), W/(2 sf)], drawn
  // with a CPU generator from `seed` (as cache-dit's default --gen-device), in the pipeline dtype.
  at::Tensor initial_noise(int64_t batch, int64_t height, int64_t width, uint64_t seed) const;

  struct DenoiseResult {
    at::Tensor latents;  // packed [B, N_img, C_p]
    sched::Schedule schedule;
    std::vector<double> step_seconds;
  };
  using StepCallback = std::function<void(int64_t step, double seconds)>;
  // The Euler loop of §5.4 from `noise` [B, C_p, h, w].
  DenoiseResult denoise(const at::Tensor& prompt_embeds, const at::Tensor& noise, int64_t steps, double guidance,
                        const StepCallback& on_step = nullptr) const;
  // Packed latents [B, h*w, C_p] -> images [B, 3, H, W] float in [0, 1].
  at::Tensor decode(const at::Tensor& latents, int64_t h, int64_t w) const;

  // Pixels per packed token side (2 * VAE scale factor): H and W must be multiples of it.
  int64_t pixel_multiple() const { return 2 * vae_->scale_factor(); }
  const Transformer& transformer() const { return *transformer_; }
  const nlohmann::json& defaults() const { return defaults_; }
  const std::string& name() const { return name_; }
  // Checkpoint bytes this rank read, per component ("transformer", "text_encoder", "vae").
  const std::map<std::string, uint64_t>& bytes_read() const { return bytes_read_; }

  // Builds the pipeline from explicit configs and weight sources (used by the golden cases).
  Pipeline(const TransformerConfig& tcfg, const nn::Weights& transformer_weights, const VaeConfig& vcfg,
           const nn::Weights& vae_weights, const SchedulerConfig& scfg, std::shared_ptr<parallel::Context> ctx);

 private:
  std::shared_ptr<parallel::Context> ctx_;
  std::string name_;
  nlohmann::json defaults_;
  at::ScalarType dtype_ = at::kFloat;
  at::Device device_ = at::kCPU;
  std::vector<int> text_layers_;
  std::shared_ptr<text::Tokenizer> tokenizer_;
  std::unique_ptr<llm::DecoderLM> text_encoder_;
  std::unique_ptr<Transformer> transformer_;
  std::unique_ptr<Vae> vae_;
  SchedulerConfig scheduler_;
  std::map<std::string, uint64_t> bytes_read_;
  nlohmann::json te_json_;  // the text encoder's config as loaded (export writes it back)

  friend void export_tiny(const std::string& dir, int transformer_shards);
};

// Image token ids (t, h, w, l) = (0, row, col, 0) for an h x w grid: [h*w, 4] int64.
at::Tensor image_ids(int64_t h, int64_t w);
// Text token ids (0, 0, 0, l): [L, 4] int64.
at::Tensor text_ids(int64_t length);

// Writes the built-in tiny model as a diffusers-format folder (model_index.json, transformer/ in
// `transformer_shards` safetensors files with an index, vae/, text_encoder/ with Mistral3's
// `language_model.model.` names, tokenizer/, scheduler/): the same weights as the built-in model.
void export_tiny(const std::string& dir, int transformer_shards);

// `ditgen flux2`: load, warm up, generate, write PNG(s) and the report. Returns the report.
io::RunReport generate(const pipeline::GenerateRequest& request, std::shared_ptr<parallel::Context> ctx);

}  // namespace ditgen::flux2
