// `ditgen qwen-image`: the registry entry (flags beyond the common ones, loading, export).
#include <spdlog/spdlog.h>

#include "lib/pipeline/model_files.h"
#include "models/qwen_image/pipeline.h"

namespace ditgen::qwen_image {

pipeline::ModelIdentity identity() { return {"qwen-image", "qwen_image", "QwenImagePipeline"}; }

pipeline::ModelEntry model_entry() {
  pipeline::ModelEntry e;
  e.command = identity().command;
  e.summary = "Generate images with Qwen-Image, true CFG (built-in tiny model without --model-path)";
  e.flags = {pipeline::ModelFlag::NegativePrompt, pipeline::ModelFlag::TrueCfgScale,
             pipeline::ModelFlag::AspectRatio, pipeline::ModelFlag::Cache, pipeline::ModelFlag::Fp8,
             pipeline::ModelFlag::Images, pipeline::ModelFlag::Strength};
  // Image-to-image (QwenImageImg2ImgPipeline): one image, resized to the output size.
  e.max_images = 1;
  e.image_mode = "img2img";
  e.presets = pipeline::model_preset(identity().stem);
  e.load = [](const pipeline::GenerateRequest& req, const at::Device& device, at::ScalarType dtype,
              std::shared_ptr<parallel::Context> ctx) -> std::unique_ptr<pipeline::Model> {
    if (req.model_path.empty() && !req.random_weights)
      spdlog::info("no --model-path: running the built-in tiny Qwen-Image (random weights, no files)");
    return std::make_unique<Pipeline>(LoadOptions::from_request(req, device, dtype), ctx);
  };
  e.export_tiny = export_tiny;
  return e;
}

}  // namespace ditgen::qwen_image
