// `ditgen export-tiny flux2 DIR`: the built-in tiny FLUX.2 as a diffusers folder
// (lib/pipeline/tiny_export.h), its text encoder in Mistral3's `language_model.model.` layout.
#include "lib/pipeline/tiny_export.h"
#include "lib/text/tiny_tokenizer.h"
#include "models/flux2/pipeline.h"

namespace ditgen::flux2 {

void export_tiny(const std::string& dir, int transformer_shards, bool replace) {
  pipeline::TinyExport out(dir, replace, identity().stem);
  const auto pipe = out.load_pipeline<Pipeline, LoadOptions>();

  out.model_index(identity().pipeline_class,
                  {{"text_encoder", {"transformers", "Mistral3ForConditionalGeneration"}},
                   {"tokenizer", {"transformers", "PixtralProcessor"}},
                   {"transformer", {"diffusers", "Flux2Transformer2DModel"}},
                   {"vae", {"diffusers", "AutoencoderKLFlux2"}}});
  out.component("transformer", out.tiny("transformer"), transformer_shards);
  // Real checkpoints carry the batch norm's counter.
  out.component("vae", out.tiny("vae"), 1, "diffusion_pytorch_model", "",
                {{"bn.num_batches_tracked", at::zeros({}, at::kLong)}});
  nlohmann::json te = {{"architectures", {"Mistral3ForConditionalGeneration"}},
                       {"model_type", "mistral3"},
                       {"text_config", pipe->te_json_}};
  te["text_config"]["model_type"] = "mistral";
  out.text_encoder(te, "language_model.model.", text::tiny_tekken_tokenizer_json());
  out.commit("FLUX.2");
}

}  // namespace ditgen::flux2
