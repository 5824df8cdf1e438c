#include "lib/pipeline/tiny_export.h"

#include <spdlog/spdlog.h>

#include "lib/io/checkpoint.h"
#include "lib/io/json.h"
#include "lib/pipeline/model.h"
#include "lib/pipeline/model_files.h"
#include "lib/pipeline/output.h"
#include "lib/runtime/error.h"

namespace ditgen::pipeline {

TinyExport::TinyExport(const std::string& dir, bool replace, std::string stem)
    : folder_(dir, replace), dir_(dir), stem_(std::move(stem)) {}

nlohmann::json TinyExport::tiny(const std::string& section) const {
  return model_preset(stem_)["tiny"].value(section, nlohmann::json::object());
}

void TinyExport::json(const std::string& relative_path, const nlohmann::json& j) {
  const std::string path = io::join_path(folder_.path(), relative_path);
  if (const auto slash = path.find_last_of('/'); slash != std::string::npos) make_dirs(path.substr(0, slash));
  io::write_file_atomic(path, j.dump(2) + "\n");
}

void TinyExport::model_index(const std::string& pipeline_class,
                             std::map<std::string, std::array<std::string, 2>> components,
                             const std::string& diffusers_version) {
  components.emplace("scheduler", std::array<std::string, 2>{"diffusers", "FlowMatchEulerDiscreteScheduler"});
  nlohmann::json index = {{"_class_name", pipeline_class}, {"_diffusers_version", diffusers_version}};
  for (const auto& [name, library_class] : components) index[name] = library_class;
  json("model_index.json", index);
  components_ = std::move(components);
}

void TinyExport::component(const std::string& name, nlohmann::json config, int shards,
                           const std::string& file_stem, const std::string& key_prefix,
                           const std::map<std::string, at::Tensor>& extra) {
  DITGEN_CHECK(recorded_.count(name), "internal: export-tiny recorded no '{}' tensors", name);
  DITGEN_CHECK(components_.count(name), "internal: export-tiny's model index has no component '{}'", name);
  const auto& [library, cls] = components_.at(name);
  if (library != "transformers") config["_class_name"] = cls;
  json(name + "/config.json", config);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [key, t] : recorded_.at(name)->recorded()) tensors[key_prefix + key] = t;
  for (const auto& [key, t] : extra) tensors[key_prefix + key] = t;
  io::write_component(io::join_path(folder_.path(), name), file_stem, tensors, shards);
}

void TinyExport::text_encoder(const nlohmann::json& config, const std::string& key_prefix,
                              const nlohmann::json& tokenizer) {
  component("text_encoder", config, /*shards=*/2, "model", key_prefix);
  json("tokenizer/tokenizer.json", tokenizer);
}

void TinyExport::commit(const std::string& label) {
  nlohmann::json sched = tiny("scheduler");
  sched["_class_name"] = "FlowMatchEulerDiscreteScheduler";
  json("scheduler/scheduler_config.json", sched);
  // Its presets travel with it: the folder runs with the tiny defaults (size, frames, steps, prompt).
  json(kPresetsFile, {{"defaults", tiny("defaults")}});
  folder_.commit();
  spdlog::info("wrote the tiny {} to {}", label, dir_);
}

}  // namespace ditgen::pipeline
