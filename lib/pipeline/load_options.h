#pragma once
// How a model command loads its model, from the request: what every model's loader takes (a model adds
// its own fields by deriving).
#include <ATen/ATen.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "lib/nn/lora.h"
#include "lib/nn/weights.h"
#include "lib/pipeline/request.h"

namespace ditgen::pipeline {

struct LoadOptions {
  std::string model_path;       // empty: the built-in tiny model
  bool random_weights = false;  // real config, random weights
  uint64_t weight_seed = 0;
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  bool parallel_text = false;      // --parallel-text: the text encoder tensor-parallel over every rank (TE-P)
  bool defer_transformer = false;  // memory plan: the transformer is read by load_deferred(), not here
  bool parallel_vae = false;       // --parallel-vae: the VAE decode split by rows over every rank (VAE-P)
  bool fp8 = false;                // --fp8: the transformer blocks' linears quantised to e4m3 as they load
  bool offload = false;            // --offload: transformer blocks and text-encoder layers streamed from host memory
  bool image_encoder = false;      // --image: the VAE's encoder is read too (a decode-only VAE skips it)
  // Optional hook that wraps each component's weight source (by component name), e.g. to record the
  // tensors of the built-in tiny model for export.
  std::function<std::shared_ptr<nn::WeightSource>(const std::string&, std::shared_ptr<nn::WeightSource>)>
      wrap_source;

  // Export-tiny: every component's tensors are recorded into `recorded` (by component name) as they load.
  void record_into(std::map<std::string, std::shared_ptr<nn::RecordingSource>>& recorded) {
    wrap_source = [&recorded](const std::string& component, std::shared_ptr<nn::WeightSource> src) {
      auto r = std::make_shared<nn::RecordingSource>(std::move(src));
      recorded[component] = r;
      return std::static_pointer_cast<nn::WeightSource>(r);
    };
  }

  // A model command's load: the request's model, weights and parallel text/VAE on `device` in `dtype`,
  // the transformer deferred for the runner's memory plan.
  static LoadOptions from_request(const GenerateRequest& req, const at::Device& device,
                                  at::ScalarType dtype) {
    LoadOptions lo;
    lo.model_path = req.model_path;
    lo.random_weights = req.random_weights;
    lo.weight_seed = req.weight_seed;
    lo.dtype = dtype;
    lo.device = device;
    lo.parallel_text = req.parallel_text;
    lo.parallel_vae = req.parallel_vae;
    lo.fp8 = req.fp8;
    lo.offload = req.offload;
    // --image, or images in the prompt file's items: the VAE's encoder is read too.
    lo.image_encoder =
        !req.images.empty() || std::any_of(req.items.begin(), req.items.end(),
                                           [](const PromptItem& i) { return !i.images.empty(); });
    lo.defer_transformer = true;  // the runner's memory plan reads it once the prompts are encoded
    lo.add_lora(req);
    return lo;
  }

  // --lora: the files are read (headers and alphas) and converted to the model's weight names now;
  // each component they change gets a LoraSource (lib/nn/lora.h) that merges them into every rank's
  // slice as it loads, before --fp8 quantises the merged weight.
  void add_lora(const GenerateRequest& req) {
    if (req.lora.empty()) return;
    auto set = std::make_shared<const nn::LoraSet>(req.lora, nn::lora_model(req.lora_model));
    wrap_source = nn::lora_wrapper(set, wrap_source);
  }
};

// The run report's "lora" setting of a request with --lora: path, scale and the number of layers each
// file changes (the files are read again: headers and alphas only).
inline nlohmann::json lora_report_settings(const GenerateRequest& req) {
  nlohmann::json out = nlohmann::json::array();
  if (req.lora.empty()) return out;
  const nn::LoraSet set(req.lora, nn::lora_model(req.lora_model));
  for (const auto& f : set.summary()) out.push_back({{"path", f.path}, {"scale", f.scale}, {"layers", f.layers}});
  return out;
}

}  // namespace ditgen::pipeline
