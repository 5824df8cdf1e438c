#pragma once
// LTX-2's transformer work per denoising step (lib/pipeline/step_work.h): one Transformer::forward per
// CFG branch over `video_tokens` (latent frames x rows x columns) and `audio_tokens` latent rows, with
// `text_tokens` context rows (--max-sequence-length: the connectors' registers fill the pads), `batch`
// items each. Every block runs video and audio self-attention, each stream's cross-attention to its text
// context, audio-to-video and video-to-audio attention and the two MLPs. The text keys and values are
// projected once per prompt (Transformer::TextCache), not each step, unless `text_keys_per_step` (--offload).
#include "lib/pipeline/step_work.h"
#include "models/ltx2/transformer.h"

namespace ditgen::ltx2 {

pipeline::StepWork step_work(const TransformerConfig& c, int64_t video_tokens, int64_t audio_tokens,
                             int64_t text_tokens, int64_t batch, int branches, bool text_keys_per_step = false);

}  // namespace ditgen::ltx2
