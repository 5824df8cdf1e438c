// `ditgen export-tiny ltx2 DIR`: the built-in tiny LTX-2 as a diffusers folder (lib/pipeline/tiny_export.h),
// its text encoder with Gemma 3's `model.language_model.` names.
#include "lib/pipeline/tiny_export.h"
#include "models/ltx2/pipeline.h"

namespace ditgen::ltx2 {

void export_tiny(const std::string& dir, int transformer_shards, bool replace) {
  pipeline::TinyExport out(dir, replace, identity().stem);
  const auto pipe = out.load_pipeline<Pipeline>();

  out.model_index(identity().pipeline_class,
                  {{"vae", {"diffusers", "AutoencoderKLLTX2Video"}},
                   {"audio_vae", {"diffusers", "AutoencoderKLLTX2Audio"}},
                   {"text_encoder", {"transformers", "Gemma3ForConditionalGeneration"}},
                   {"tokenizer", {"transformers", "GemmaTokenizerFast"}},
                   {"connectors", {"ltx2", "LTX2TextConnectors"}},
                   {"transformer", {"diffusers", "LTX2VideoTransformer3DModel"}},
                   {"vocoder", {"ltx2", "LTX2Vocoder"}}},
                  "0.37.0");
  for (const char* name : {"transformer", "connectors", "vae", "audio_vae", "vocoder"})
    out.component(name, out.tiny(name), std::string(name) == "transformer" ? transformer_shards : 1);
  nlohmann::json te = pipe->te_json_;
  te["architectures"] = {"Gemma3ForCausalLM"};
  out.text_encoder(te, "model.language_model.", tiny_tokenizer_json());
  out.commit("LTX-2");
}

}  // namespace ditgen::ltx2
