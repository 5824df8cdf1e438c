// `ditgen export-tiny flux2 DIR`: the built-in tiny FLUX.2 written as a diffusers folder, so that
// tests (and users) exercise the real checkpoint path: index files, shards, prefixes, configs.
#include <spdlog/spdlog.h>

#include "lib/io/json.h"
#include "lib/io/output_files.h"
#include "lib/io/safetensors.h"
#include "lib/pipeline/output.h"
#include "lib/runtime/embedded_configs.h"
#include "lib/runtime/error.h"
#include "lib/text/tiny_tokenizer.h"
#include "models/flux2/pipeline.h"

namespace ditgen::flux2 {

namespace {

void write_json(const std::string& path, const nlohmann::json& j) { io::write_file_atomic(path, j.dump(2) + "\n"); }

}  // namespace

void export_tiny(const std::string& out_dir, int transformer_shards, bool replace) {
  io::OutputFolder folder(out_dir, replace);  // refuses a non-empty folder before any work
  const std::string& dir = folder.path();
  std::map<std::string, std::shared_ptr<nn::RecordingSource>> rec;
  LoadOptions lo;
  lo.record_into(rec);

  Pipeline pipe(lo, parallel::Context::single());
  const auto preset = io::parse_json(embedded_configs().at("flux2"), "configs/flux2.json")["tiny"];

  for (const char* sub : {"transformer", "vae", "text_encoder", "tokenizer", "scheduler"})
    pipeline::make_dirs(io::join_path(dir, sub));

  write_json(io::join_path(dir, "model_index.json"),
             {{"_class_name", "Flux2Pipeline"},
              {"_diffusers_version", "0.36.0"},
              {"scheduler", {"diffusers", "FlowMatchEulerDiscreteScheduler"}},
              {"text_encoder", {"transformers", "Mistral3ForConditionalGeneration"}},
              {"tokenizer", {"transformers", "PixtralProcessor"}},
              {"transformer", {"diffusers", "Flux2Transformer2DModel"}},
              {"vae", {"diffusers", "AutoencoderKLFlux2"}}});

  nlohmann::json tcfg = preset["transformer"];
  tcfg["_class_name"] = "Flux2Transformer2DModel";
  write_json(io::join_path(dir, "transformer/config.json"), tcfg);
  io::write_component(io::join_path(dir, "transformer"), "diffusion_pytorch_model", rec["transformer"]->recorded(),
                transformer_shards);

  nlohmann::json vcfg = preset["vae"];
  vcfg["_class_name"] = "AutoencoderKLFlux2";
  write_json(io::join_path(dir, "vae/config.json"), vcfg);
  auto vae = rec["vae"]->recorded();
  vae["bn.num_batches_tracked"] = at::zeros({}, at::kLong);  // real checkpoints carry it
  io::write_component(io::join_path(dir, "vae"), "diffusion_pytorch_model", vae, 1);

  // Mistral3ForConditionalGeneration layout: the language model under `language_model.model.`.
  nlohmann::json te = {{"architectures", {"Mistral3ForConditionalGeneration"}},
                       {"model_type", "mistral3"},
                       {"text_config", pipe.te_json_}};
  te["text_config"]["model_type"] = "mistral";
  write_json(io::join_path(dir, "text_encoder/config.json"), te);
  std::map<std::string, at::Tensor> te_tensors;
  for (const auto& kv : rec["text_encoder"]->recorded()) te_tensors["language_model.model." + kv.first] = kv.second;
  io::write_component(io::join_path(dir, "text_encoder"), "model", te_tensors, 2);

  write_json(io::join_path(dir, "tokenizer/tokenizer.json"), text::tiny_tekken_tokenizer_json());
  nlohmann::json sched = preset["scheduler"];
  sched["_class_name"] = "FlowMatchEulerDiscreteScheduler";
  write_json(io::join_path(dir, "scheduler/scheduler_config.json"), sched);
  // Its presets travel with it: the folder runs with the tiny defaults (size, steps, prompt).
  write_json(io::join_path(dir, pipeline::kPresetsFile), {{"defaults", preset["defaults"]}});
  folder.commit();
  spdlog::info("wrote the tiny FLUX.2 to {}", out_dir);
}

}  // namespace ditgen::flux2
