// `ditgen export-tiny qwen-image DIR`: the built-in tiny Qwen-Image written as a diffusers folder, so that
// tests (and users) exercise the real checkpoint path: index files, shards, the text encoder's legacy
// `model.*` names with its keys at the config's top level (as Qwen/Qwen-Image ships it), configs.
#include <spdlog/spdlog.h>

#include "lib/io/checkpoint.h"
#include "lib/io/json.h"
#include "lib/io/output_files.h"
#include "lib/pipeline/output.h"
#include "lib/runtime/embedded_configs.h"
#include "lib/text/tiny_tokenizer.h"
#include "models/qwen_image/pipeline.h"

namespace ditgen::qwen_image {

void export_tiny(const std::string& out_dir, int transformer_shards, bool replace) {
  io::OutputFolder folder(out_dir, replace);  // refuses a non-empty folder before any work
  const std::string& dir = folder.path();
  std::map<std::string, std::shared_ptr<nn::RecordingSource>> rec;
  LoadOptions lo;
  lo.record_into(rec);

  Pipeline pipe(lo, parallel::Context::single());
  const auto preset = io::parse_json(embedded_configs().at("qwen_image"), "configs/qwen_image.json")["tiny"];
  auto write_json = [](const std::string& path, const nlohmann::json& j) {
    io::write_file_atomic(path, j.dump(2) + "\n");
  };

  for (const char* sub : {"transformer", "vae", "text_encoder", "tokenizer", "scheduler"})
    pipeline::make_dirs(io::join_path(dir, sub));
  write_json(io::join_path(dir, "model_index.json"),
             {{"_class_name", "QwenImagePipeline"},
              {"_diffusers_version", "0.36.0"},
              {"scheduler", {"diffusers", "FlowMatchEulerDiscreteScheduler"}},
              {"text_encoder", {"transformers", "Qwen2_5_VLForConditionalGeneration"}},
              {"tokenizer", {"transformers", "Qwen2Tokenizer"}},
              {"transformer", {"diffusers", "QwenImageTransformer2DModel"}},
              {"vae", {"diffusers", "AutoencoderKLQwenImage"}}});

  nlohmann::json tcfg = preset["transformer"];
  tcfg["_class_name"] = "QwenImageTransformer2DModel";
  tcfg["guidance_embeds"] = false;
  write_json(io::join_path(dir, "transformer/config.json"), tcfg);
  io::write_component(io::join_path(dir, "transformer"), "diffusion_pytorch_model", rec["transformer"]->recorded(),
                      transformer_shards);

  nlohmann::json vcfg = preset["vae"];
  vcfg["_class_name"] = "AutoencoderKLQwenImage";
  write_json(io::join_path(dir, "vae/config.json"), vcfg);
  io::write_component(io::join_path(dir, "vae"), "diffusion_pytorch_model", rec["vae"]->recorded(), 1);

  nlohmann::json te = pipe.te_json_;
  te["architectures"] = {"Qwen2_5_VLForConditionalGeneration"};
  write_json(io::join_path(dir, "text_encoder/config.json"), te);
  std::map<std::string, at::Tensor> te_tensors;
  for (const auto& kv : rec["text_encoder"]->recorded()) te_tensors["model." + kv.first] = kv.second;
  io::write_component(io::join_path(dir, "text_encoder"), "model", te_tensors, 2);

  write_json(io::join_path(dir, "tokenizer/tokenizer.json"), text::tiny_qwen_tokenizer_json());
  nlohmann::json sched = preset["scheduler"];
  sched["_class_name"] = "FlowMatchEulerDiscreteScheduler";
  write_json(io::join_path(dir, "scheduler/scheduler_config.json"), sched);
  // Its presets travel with it: the folder runs with the tiny defaults (size, steps, prompt).
  write_json(io::join_path(dir, pipeline::kPresetsFile), {{"defaults", preset["defaults"]}});
  folder.commit();
  spdlog::info("wrote the tiny Qwen-Image to {}", out_dir);
}

}  // namespace ditgen::qwen_image
