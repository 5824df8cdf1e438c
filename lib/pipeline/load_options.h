#pragma once
// How a model command loads its model, from the request: what every model's loader takes (a model adds
// its own fields by deriving).
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <string>

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
    lo.image_encoder = !req.images.empty();
    lo.defer_transformer = true;  // the runner's memory plan reads it once the prompts are encoded
    return lo;
  }
};

}  // namespace ditgen::pipeline
