// `ditgen export-tiny ltx2 DIR`: the built-in tiny LTX-2 written as a diffusers folder, so that tests (and
// users) exercise the real checkpoint path: index files, shards, the text encoder's
// `model.language_model.` names, every component's config.
#include <spdlog/spdlog.h>

#include "lib/io/checkpoint.h"
#include "lib/io/json.h"
#include "lib/io/output_files.h"
#include "lib/pipeline/output.h"
#include "lib/runtime/embedded_configs.h"
#include "models/ltx2/pipeline.h"

namespace ditgen::ltx2 {

void export_tiny(const std::string& out_dir, int transformer_shards, bool replace) {
  io::OutputFolder folder(out_dir, replace);  // refuses a non-empty folder before any work
  const std::string& dir = folder.path();
  std::map<std::string, std::shared_ptr<nn::RecordingSource>> rec;
  LoadOptions lo;
  lo.record_into(rec);

  Pipeline pipe(lo, parallel::Context::single());
  const auto preset = io::parse_json(embedded_configs().at("ltx2"), "configs/ltx2.json")["tiny"];
  auto write_json = [](const std::string& path, const nlohmann::json& j) {
    io::write_file_atomic(path, j.dump(2) + "\n");
  };

  for (const char* sub : {"transformer", "connectors", "vae", "audio_vae", "vocoder", "text_encoder", "tokenizer",
                          "scheduler"})
    pipeline::make_dirs(io::join_path(dir, sub));
  write_json(io::join_path(dir, "model_index.json"),
             {{"_class_name", "LTX2Pipeline"},
              {"_diffusers_version", "0.37.0"},
              {"scheduler", {"diffusers", "FlowMatchEulerDiscreteScheduler"}},
              {"vae", {"diffusers", "AutoencoderKLLTX2Video"}},
              {"audio_vae", {"diffusers", "AutoencoderKLLTX2Audio"}},
              {"text_encoder", {"transformers", "Gemma3ForConditionalGeneration"}},
              {"tokenizer", {"transformers", "GemmaTokenizerFast"}},
              {"connectors", {"ltx2", "LTX2TextConnectors"}},
              {"transformer", {"diffusers", "LTX2VideoTransformer3DModel"}},
              {"vocoder", {"ltx2", "LTX2Vocoder"}}});

  const std::map<std::string, std::string> classes = {{"transformer", "LTX2VideoTransformer3DModel"},
                                                      {"connectors", "LTX2TextConnectors"},
                                                      {"vae", "AutoencoderKLLTX2Video"},
                                                      {"audio_vae", "AutoencoderKLLTX2Audio"},
                                                      {"vocoder", "LTX2Vocoder"}};
  for (const auto& [name, cls] : classes) {
    nlohmann::json cfg = preset[name];
    cfg["_class_name"] = cls;
    write_json(io::join_path(dir, name + "/config.json"), cfg);
    io::write_component(io::join_path(dir, name), "diffusion_pytorch_model", rec[name]->recorded(),
                        name == "transformer" ? transformer_shards : 1);
  }

  nlohmann::json te = pipe.te_json_;
  te["architectures"] = {"Gemma3ForCausalLM"};
  write_json(io::join_path(dir, "text_encoder/config.json"), te);
  std::map<std::string, at::Tensor> te_tensors;
  for (const auto& kv : rec["text_encoder"]->recorded()) te_tensors["model.language_model." + kv.first] = kv.second;
  io::write_component(io::join_path(dir, "text_encoder"), "model", te_tensors, 2);

  write_json(io::join_path(dir, "tokenizer/tokenizer.json"), tiny_tokenizer_json());
  nlohmann::json sched = preset["scheduler"];
  sched["_class_name"] = "FlowMatchEulerDiscreteScheduler";
  write_json(io::join_path(dir, "scheduler/scheduler_config.json"), sched);
  // Its presets travel with it: the folder runs with the tiny defaults (size, frames, steps, prompt).
  write_json(io::join_path(dir, pipeline::kPresetsFile), {{"defaults", preset["defaults"]}});
  folder.commit();
  spdlog::info("wrote the tiny LTX-2 to {}", out_dir);
}

}  // namespace ditgen::ltx2
