#pragma once
// `ditgen export-tiny <model> DIR`: a built-in tiny model written as a diffusers folder, so that tests
// (and users) exercise the real checkpoint path: index files, shards, prefixes, configs. A model's export
// loads its tiny pipeline with recording sources, then says each component's class and key layout; what
// every model writes the same way (the scheduler, the presets, the text encoder's shards and tokenizer)
// is written here:
//
//   TinyExport out(dir, replace, "qwen_image");
//   const auto pipe = out.load_pipeline<Pipeline>();
//   out.model_index("QwenImagePipeline", {{"vae", {"diffusers", "AutoencoderKLQwenImage"}}, ...});
//   out.component("vae", out.tiny("vae"));
//   out.text_encoder(pipe->te_json_, "model.", tokenizer_json);
//   out.commit("Qwen-Image");
#include <ATen/ATen.h>

#include <array>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "lib/io/output_files.h"
#include "lib/parallel/context.h"
#include "lib/pipeline/load_options.h"

namespace ditgen::pipeline {

class TinyExport {
 public:
  // Refuses a non-empty `dir` (without `replace`) before any work; files go to a staging folder until
  // commit(). `stem` names the preset (configs/<stem>.json).
  TinyExport(const std::string& dir, bool replace, std::string stem);

  // Every component's tensors are recorded as a pipeline loads with these options.
  void record(LoadOptions& options) { options.record_into(recorded_); }
  // The model's tiny pipeline `P` on one process, loaded with `Options` that record every component.
  template <class P, class Options = LoadOptions>
  std::unique_ptr<const P> load_pipeline() {
    Options options;
    record(options);
    return std::make_unique<const P>(options, parallel::Context::single());
  }
  // The tiny preset's section (configs/<stem>.json "tiny.<section>").
  nlohmann::json tiny(const std::string& section) const;

  // model_index.json: the pipeline class and each component's [library, class], with the scheduler that
  // commit() writes (FlowMatchEulerDiscreteScheduler) added.
  void model_index(const std::string& pipeline_class,
                   std::map<std::string, std::array<std::string, 2>> components,
                   const std::string& diffusers_version = "0.36.0");
  // <name>/config.json (`config`, with "_class_name" the model index's class of `name` unless its library is
  // transformers, whose configs name "architectures" instead) and the recorded tensors of `name` plus
  // `extra`, each key prefixed by `key_prefix`, in `shards` files named `file_stem`.
  void component(const std::string& name, nlohmann::json config, int shards = 1,
                 const std::string& file_stem = "diffusion_pytorch_model", const std::string& key_prefix = "",
                 const std::map<std::string, at::Tensor>& extra = {});
  // The text encoder as transformers writes it (`config`, its tensors in two `model-*.safetensors` shards
  // with each key prefixed by `key_prefix`, the checkpoint generation's layout) and tokenizer/tokenizer.json.
  void text_encoder(const nlohmann::json& config, const std::string& key_prefix,
                    const nlohmann::json& tokenizer);
  // Any JSON file, by its path in the folder (folders made as needed).
  void json(const std::string& relative_path, const nlohmann::json& j);
  // The tiny scheduler (FlowMatchEulerDiscreteScheduler) and presets (the folder runs with the tiny
  // defaults), then the folder moves into place; `label` names the model in the log.
  void commit(const std::string& label);

 private:
  io::OutputFolder folder_;
  std::string dir_, stem_;
  std::map<std::string, std::shared_ptr<nn::RecordingSource>> recorded_;
  std::map<std::string, std::array<std::string, 2>> components_;  // the model index's [library, class]
};

}  // namespace ditgen::pipeline
