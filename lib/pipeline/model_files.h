#pragma once
// Where a model's components come from, read the same way for every model (DESIGN §5): a diffusers
// folder (--model-path: model_index.json naming the pipeline class, one folder per component with its
// config.json and safetensors shards, tokenizer/, scheduler/), or the model's preset file
// (configs/<model>.json) with seeded random weights: its "tiny" sections for the built-in tiny model, its
// top-level sections for --random-weights at the real size. A model's loader asks for configs, the
// tokenizer and weight sources by component name and builds its modules; nothing here knows a model.
//
//   ModelFiles files(opt, {"flux2", "flux2", "Flux2Pipeline"});
//   auto tcfg = TransformerConfig::from_json(files.config("transformer").json,
//   files.config("transformer").where); auto tsrc = files.weights("transformer", {}, "load transformer");
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lib/io/checkpoint.h"
#include "lib/nn/weights.h"
#include "lib/pipeline/load_options.h"
#include "lib/text/tokenizer.h"

namespace ditgen::pipeline {

// configs/<stem>.json (embedded in the binary), parsed once per process.
const nlohmann::json& model_preset(const std::string& stem);

// What a model tells the reader about itself.
struct ModelIdentity {
  std::string command;         // the subcommand, for messages: "qwen-image"
  std::string stem;            // output names and the report: "qwen_image" (+ "-tiny" / "-random")
  std::string pipeline_class;  // model_index.json "_class_name": "QwenImagePipeline"
};

// A component's configuration and where it came from (a file, or "configs/x.json tiny.vae"), for messages.
struct ComponentConfig {
  nlohmann::json json;
  std::string where;
};

class ModelFiles {
 public:
  // Checks a --model-path folder (a folder, its model_index.json and pipeline class) before anything
  // else is read; the preset is configs/<stem>.json, embedded in the binary.
  ModelFiles(const LoadOptions& options, ModelIdentity identity);

  bool tiny() const { return tiny_; }  // the built-in tiny model
  bool from_folder() const {
    return !root_.empty();
  }                                                  // configs (and unless random, weights) from --model-path
  bool random() const { return random_; }            // seeded random weights (tiny, or --random-weights)
  const std::string& name() const { return name_; }  // "flux2", "flux2-tiny", "flux2-random"
  const nlohmann::json& preset() const;              // configs/<stem>.json
  // The run defaults: the preset's (tiny or real), updated by a folder's ditgen_presets.json.
  const nlohmann::json& defaults() const { return defaults_; }

  // <folder>/<component>/config.json, or the preset's section ("tiny.<component>" for the tiny model;
  // an absent section is {}: the config's own defaults, which are the real model's).
  ComponentConfig config(const std::string& component) const;
  // <folder>/scheduler/scheduler_config.json, or the preset's "scheduler" section.
  ComponentConfig scheduler() const;
  // The folder's tokenizer/ (tokenizer.json, or the files of a slow tokenizer), or `builtin()`.
  std::shared_ptr<text::Tokenizer> tokenizer(
      const std::function<std::shared_ptr<text::Tokenizer>()>& builtin) const;

  // A component's weights: its checkpoint folder (keys starting with an `unread` prefix or ending in an
  // `unread` suffix are not reported as unused), or values seeded by (--weight-seed, component); with a
  // `progress` label, one progress item per tensor on rank 0. Passed through LoadOptions::wrap_source.
  std::shared_ptr<nn::WeightSource> weights(const std::string& component,
                                            std::vector<std::string> unread = {},
                                            const std::string& progress = "") const;
  // The same for a component whose checkpoint names need mapping (the text encoders' prefixes): `open`
  // makes the checkpoint source from the folder's tensors.
  using OpenSource = std::function<std::shared_ptr<nn::CheckpointSource>(std::shared_ptr<io::TensorStore>)>;
  std::shared_ptr<nn::WeightSource> weights_via(const std::string& component, const OpenSource& open,
                                                const std::string& progress = "") const;

 private:
  std::string component_dir(const std::string& component) const;  // checked to exist

  LoadOptions options_;
  ModelIdentity id_;
  std::string root_;  // --model-path, or "" (preset)
  bool tiny_ = false, random_ = false;
  std::string name_;
  nlohmann::json defaults_;
};

}  // namespace ditgen::pipeline
