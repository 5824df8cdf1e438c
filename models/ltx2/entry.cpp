// `ditgen ltx2`: the registry entry (flags beyond the common ones, loading, export).
#include <spdlog/spdlog.h>

#include "lib/pipeline/model_files.h"
#include "models/ltx2/pipeline.h"

namespace ditgen::ltx2 {

pipeline::ModelIdentity identity() { return {"ltx2", "ltx2", "LTX2Pipeline"}; }

pipeline::ModelEntry model_entry() {
  pipeline::ModelEntry e;
  e.command = identity().command;
  e.summary = "Generate videos with sound with LTX-2 (built-in tiny model without --model-path)";
  e.flags = {pipeline::ModelFlag::NegativePrompt, pipeline::ModelFlag::CfgGuidance,
             pipeline::ModelFlag::Video, pipeline::ModelFlag::Cache, pipeline::ModelFlag::Fp8,
             pipeline::ModelFlag::Images, pipeline::ModelFlag::ImageCrf};
  // Image-to-video (LTX2ImageToVideoPipeline): one image, the first frame; the presets' "image" section
  // holds the reference tool's ltx2_i2v defaults.
  e.max_images = 1;
  e.image_mode = "i2v";
  e.presets = pipeline::model_preset(identity().stem);
  e.load = [](const pipeline::GenerateRequest& req, const at::Device& device, at::ScalarType dtype,
              std::shared_ptr<parallel::Context> ctx) -> std::unique_ptr<pipeline::Model> {
    if (req.model_path.empty() && !req.random_weights)
      spdlog::info("no --model-path: running the built-in tiny LTX-2 (random weights, no files)");
    return std::make_unique<Pipeline>(LoadOptions::from_request(req, device, dtype), ctx);
  };
  e.export_tiny = export_tiny;
  return e;
}

}  // namespace ditgen::ltx2
