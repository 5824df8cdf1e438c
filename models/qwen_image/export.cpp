// `ditgen export-tiny qwen-image DIR`: the built-in tiny Qwen-Image as a diffusers folder
// (lib/pipeline/tiny_export.h), its text encoder with the legacy `model.*` names and its keys at the
// config's top level, as Qwen/Qwen-Image ships it.
#include "lib/pipeline/tiny_export.h"
#include "lib/text/tiny_tokenizer.h"
#include "models/qwen_image/pipeline.h"

namespace ditgen::qwen_image {

void export_tiny(const std::string& dir, int transformer_shards, bool replace) {
  pipeline::TinyExport out(dir, replace, identity().stem);
  const auto pipe = out.load_pipeline<Pipeline>();

  out.model_index(identity().pipeline_class,
                  {{"text_encoder", {"transformers", "Qwen2_5_VLForConditionalGeneration"}},
                   {"tokenizer", {"transformers", "Qwen2Tokenizer"}},
                   {"transformer", {"diffusers", "QwenImageTransformer2DModel"}},
                   {"vae", {"diffusers", "AutoencoderKLQwenImage"}}});
  nlohmann::json tcfg = out.tiny("transformer");
  tcfg["guidance_embeds"] = false;
  out.component("transformer", tcfg, transformer_shards);
  out.component("vae", out.tiny("vae"));
  nlohmann::json te = pipe->te_json_;
  te["architectures"] = {"Qwen2_5_VLForConditionalGeneration"};
  out.text_encoder(te, "model.", text::tiny_qwen_tokenizer_json());
  out.commit("Qwen-Image");
}

}  // namespace ditgen::qwen_image
