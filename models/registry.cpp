#include "models/registry.h"

#include "models/flux2/pipeline.h"
#include "models/ltx2/pipeline.h"
#include "models/qwen_image/pipeline.h"

namespace ditgen {

const std::vector<pipeline::ModelEntry>& registered_models() {
  static const std::vector<pipeline::ModelEntry> models = {
      flux2::model_entry(),
      qwen_image::model_entry(),
      ltx2::model_entry(),
  };
  return models;
}

}  // namespace ditgen
