#pragma once
// FLUX.2's transformer work per denoising step (lib/pipeline/step_work.h): what Transformer::forward
// runs for `image_tokens` packed latent tokens and `text_tokens` prompt tokens (the padded length),
// `batch` items, one call per step (guidance-distilled: no CFG branch).
#include "lib/pipeline/step_work.h"
#include "models/flux2/transformer.h"

namespace ditgen::flux2 {

pipeline::StepWork step_work(const TransformerConfig& c, int64_t image_tokens, int64_t text_tokens, int64_t batch);

}  // namespace ditgen::flux2
