#pragma once
// Qwen-Image's transformer work per denoising step (lib/pipeline/step_work.h): one Transformer::forward
// per CFG branch over `image_tokens` packed latent tokens and that branch's text length (the prompt's
// tokens after the template prefix, at most --max-sequence-length), `batch` items each.
#include <vector>

#include "lib/pipeline/step_work.h"
#include "models/qwen_image/transformer.h"

namespace ditgen::qwen_image {

// The work of one forward (one CFG branch).
pipeline::WorkCounter forward_work(const TransformerConfig& c, int64_t image_tokens, int64_t text_tokens, int64_t batch);
// One step: a forward per entry of `text_tokens` (the conditional branch, then the unconditional one
// under true CFG).
pipeline::StepWork step_work(const TransformerConfig& c, int64_t image_tokens, const std::vector<int64_t>& text_tokens,
                             int64_t batch);

}  // namespace ditgen::qwen_image
