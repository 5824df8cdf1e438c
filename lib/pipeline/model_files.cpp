#include "lib/pipeline/model_files.h"

#include <cctype>
#include <map>

#include "lib/io/json.h"
#include "lib/pipeline/model.h"
#include "lib/runtime/embedded_configs.h"
#include "lib/runtime/error.h"

namespace ditgen::pipeline {

namespace {

// Seeds a component's random weights: the same values on every rank and mesh for one --weight-seed.
uint64_t component_seed(uint64_t seed, const std::string& component) {
  return nn::stable_hash(component, 1469598103934665603ull ^ seed);
}

std::string preset_file(const std::string& stem) { return "configs/" + stem + ".json"; }

// "a" or "an" before a class name as it is read: "an LTX2Pipeline" (spelled out), "a Flux2Pipeline".
const char* article(const std::string& name) {
  const bool acronym = name.size() > 1 && std::isupper(static_cast<unsigned char>(name[1]));
  const std::string vowel_sounds = acronym ? "AEFHILMNORSX" : "AEIOU";
  return !name.empty() && vowel_sounds.find(name[0]) != std::string::npos ? "an" : "a";
}

}  // namespace

const nlohmann::json& model_preset(const std::string& stem) {
  // Parsed once per model per process.
  static std::map<std::string, nlohmann::json> parsed;
  auto it = parsed.find(stem);
  if (it == parsed.end())
    it = parsed.emplace(stem, io::parse_json(embedded_configs().at(stem), preset_file(stem))).first;
  return it->second;
}

ModelFiles::ModelFiles(const LoadOptions& options, ModelIdentity identity)
    : options_(options), id_(std::move(identity)), root_(options.model_path) {
  tiny_ = root_.empty() && !options.random_weights;
  random_ = root_.empty() || options.random_weights;
  name_ = tiny_ ? id_.stem + "-tiny" : (random_ ? id_.stem + "-random" : id_.stem);
  defaults_ = tiny_ ? preset()["tiny"]["defaults"] : preset()["defaults"];
  if (root_.empty()) return;
  DITGEN_CHECK(io::dir_exists(root_), "--model-path '{}' is not a folder", root_);
  const std::string index = io::join_path(root_, "model_index.json");
  DITGEN_CHECK(io::file_exists(index), "--model-path '{}' has no model_index.json: is it a diffusers folder?",
               root_);
  const std::string cls = io::json_get<std::string>(io::read_json_file(index), "_class_name", "", index);
  DITGEN_CHECK(cls == id_.pipeline_class, "{} names pipeline class '{}', but `ditgen {}` needs {} {} folder",
               index, cls, id_.command, article(id_.pipeline_class), id_.pipeline_class);
  defaults_ = folder_defaults(root_, defaults_);
}

const nlohmann::json& ModelFiles::preset() const { return model_preset(id_.stem); }

std::string ModelFiles::component_dir(const std::string& component) const {
  const std::string dir = io::join_path(root_, component);
  DITGEN_CHECK(io::dir_exists(dir), "'{}' is missing its '{}' folder", root_, component);
  return dir;
}

ComponentConfig ModelFiles::config(const std::string& component) const {
  if (from_folder()) {
    const std::string path = io::join_path(component_dir(component), "config.json");
    return {io::read_json_file(path), path};
  }
  const nlohmann::json& sections = tiny_ ? preset()["tiny"] : preset();
  return {sections.value(component, nlohmann::json::object()),
          preset_file(id_.stem) + (tiny_ ? " tiny." : " ") + component};
}

ComponentConfig ModelFiles::scheduler() const {
  if (from_folder()) {
    const std::string path = io::join_path(component_dir("scheduler"), "scheduler_config.json");
    return {io::read_json_file(path), path};
  }
  return config("scheduler");
}

std::shared_ptr<text::Tokenizer> ModelFiles::tokenizer(
    const std::function<std::shared_ptr<text::Tokenizer>()>& builtin) const {
  return from_folder() ? text::Tokenizer::from_file(component_dir("tokenizer")) : builtin();
}

std::shared_ptr<nn::WeightSource> ModelFiles::weights(const std::string& component,
                                                      std::vector<std::string> unread,
                                                      const std::string& progress) const {
  return weights_via(
      component,
      [&](std::shared_ptr<io::TensorStore> store) {
        return std::make_shared<nn::CheckpointSource>(std::move(store), "", unread);
      },
      progress);
}

std::shared_ptr<nn::WeightSource> ModelFiles::weights_via(const std::string& component,
                                                          const OpenSource& open,
                                                          const std::string& progress) const {
  std::shared_ptr<nn::WeightSource> src;
  if (random_) {
    src = std::make_shared<nn::RandomSource>(component_seed(options_.weight_seed, component));
  } else {
    std::shared_ptr<nn::CheckpointSource> ckpt = open(io::TensorStore::open_dir(component_dir(component)));
    src = progress.empty() ? std::static_pointer_cast<nn::WeightSource>(ckpt)
                           : std::make_shared<nn::ProgressSource>(ckpt, progress, ckpt->expected_count());
  }
  return options_.wrap_source ? options_.wrap_source(component, src) : src;
}

}  // namespace ditgen::pipeline
