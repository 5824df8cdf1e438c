// `ditgen export-tiny ltx2 DIR`: the built-in tiny LTX-2 as a diffusers folder (lib/pipeline/tiny_export.h),
// its text encoder with Gemma 3's `model.language_model.` names.
#include "lib/pipeline/tiny_export.h"
#include "models/ltx2/pipeline.h"

namespace ditgen::ltx2 {

void export_tiny(const std::string& dir, int transformer_shards, bool replace) {
  pipeline::TinyExport out(dir, replace, identity().stem);
  LoadOptions lo;
  out.record(lo);
  const Pipeline pipe(lo, parallel::Context::single());

  const std::map<std::string, std::array<std::string, 2>> components = {
      {"scheduler", {"diffusers", "FlowMatchEulerDiscreteScheduler"}},
      {"vae", {"diffusers", "AutoencoderKLLTX2Video"}},
      {"audio_vae", {"diffusers", "AutoencoderKLLTX2Audio"}},
      {"text_encoder", {"transformers", "Gemma3ForConditionalGeneration"}},
      {"tokenizer", {"transformers", "GemmaTokenizerFast"}},
      {"connectors", {"ltx2", "LTX2TextConnectors"}},
      {"transformer", {"diffusers", "LTX2VideoTransformer3DModel"}},
      {"vocoder", {"ltx2", "LTX2Vocoder"}}};
  out.model_index(identity().pipeline_class, components, "0.37.0");
  for (const char* name : {"transformer", "connectors", "vae", "audio_vae", "vocoder"})
    out.component(name, out.tiny(name), components.at(name)[1],
                  std::string(name) == "transformer" ? transformer_shards : 1);
  nlohmann::json te = pipe.te_json_;
  te["architectures"] = {"Gemma3ForCausalLM"};
  out.component("text_encoder", te, "", 2, "model", "model.language_model.");
  out.json("tokenizer/tokenizer.json", tiny_tokenizer_json());
  out.commit("LTX-2");
}

}  // namespace ditgen::ltx2
