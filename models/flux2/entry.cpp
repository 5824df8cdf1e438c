// `ditgen flux2`: the registry entry (flags beyond the common ones, loading, export).
#include <spdlog/spdlog.h>

#include "lib/pipeline/model_files.h"
#include "models/flux2/pipeline.h"

namespace ditgen::flux2 {

pipeline::ModelIdentity identity() { return {"flux2", "flux2", "Flux2Pipeline"}; }

pipeline::ModelEntry model_entry() {
  pipeline::ModelEntry e;
  e.command = identity().command;
  e.summary = "Generate images with FLUX.2-dev (built-in tiny model without --model-path)";
  e.flags = {pipeline::ModelFlag::Guidance, pipeline::ModelFlag::TextEncoderOutLayers, pipeline::ModelFlag::Cache,
             pipeline::ModelFlag::Fp8, pipeline::ModelFlag::Images};
  // Multi-reference editing (Flux2Pipeline(image=[...])); BFL documents up to 10 references.
  e.max_images = 10;
  e.image_mode = "edit";
  e.check_image = [](const io::InputImage& im) { check_reference(im.pixels, im.path); };
  e.presets = pipeline::model_preset(identity().stem);
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
