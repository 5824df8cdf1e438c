// `ditgen flux2`: the registry entry (flags beyond the common ones, loading, export).
#include <spdlog/spdlog.h>

#include "lib/io/json.h"
#include "lib/runtime/embedded_configs.h"
#include "models/flux2/pipeline.h"

namespace ditgen::flux2 {

pipeline::ModelEntry model_entry() {
  pipeline::ModelEntry e;
  e.command = "flux2";
  e.summary = "Generate images with FLUX.2-dev (built-in tiny model without --model-path)";
  e.flags = {pipeline::ModelFlag::Guidance, pipeline::ModelFlag::TextEncoderOutLayers, pipeline::ModelFlag::Cache,
             pipeline::ModelFlag::Fp8};
  e.presets = io::parse_json(embedded_configs().at("flux2"), "configs/flux2.json");
  e.load = [](const pipeline::GenerateRequest& req, const at::Device& device, at::ScalarType dtype,
              std::shared_ptr<parallel::Context> ctx) -> std::unique_ptr<pipeline::Model> {
    LoadOptions lo(pipeline::LoadOptions::from_request(req, device, dtype));
    lo.text_layers = req.text_encoder_out_layers;
    if (req.model_path.empty() && !req.random_weights)
      spdlog::info("no --model-path: running the built-in tiny FLUX.2 (random weights, no files)");
    return std::make_unique<Pipeline>(lo, ctx);
  };
  e.export_tiny = export_tiny;
  return e;
}

}  // namespace ditgen::flux2
