#pragma once
// Qwen-Image prompt template, tokenization and text encoding with the Qwen2.5-VL text model
// (docs/reference/qwen-image.md §4.1-4.3).
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lib/text/token_batch.h"
#include "lib/text/tokenizer.h"
#include "models/llm/decoder.h"

namespace ditgen::qwen_image {

// The chat template around the user prompt: kTemplatePrefix + prompt + kTemplateSuffix.
extern const char* const kSystemMessage;   // "Describe the image by detailing ..."
extern const char* const kTemplatePrefix;  // "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
extern const char* const kTemplateSuffix;  // "<|im_end|>\n<|im_start|>assistant\n"

// Prompt lengths beyond this many tokens are cut (the reference's tokenizer max_length is 1024 + prefix,
// and a larger max_sequence_length is an error there).
constexpr int64_t kMaxPromptTokens = 1024;

// The template with the user prompt inserted literally (braces in it are not format fields).
std::string chat_prompt(const std::string& user_prompt);

// Tokens of kTemplatePrefix, which encode_prompts drops after the text encoder: 34 for Qwen's vocabulary
// (the reference hard-codes prompt_template_encode_start_idx = 34), the right count for any other one
// (the built-in tiny tokenizer). Exactly this many are dropped even when a prompt starting with
// whitespace + newline merges with the prefix's last "\n", as in the reference (§4.2).
int64_t template_prefix_tokens(const text::Tokenizer& tokenizer);

using TokenBatch = text::TokenBatch;  // ids and mask [B, L] int64, CPU

// §4.3 step 1: each prompt through chat_prompt, encoded without added special tokens, cut on the right to
// `max_length` (an overlong prompt loses the suffix), padded on the RIGHT with <|endoftext|> to the longest
// in the batch. Fails if the tokenizer lacks <|endoftext|>, <|im_start|> or <|im_end|>.
TokenBatch tokenize(const text::Tokenizer& tokenizer, const std::vector<std::string>& prompts,
                    int64_t max_length);

struct PromptEmbeds {
  at::Tensor embeds;  // [B, L, hidden] `dtype` on `device`; rows past a prompt's length are zero
  at::Tensor mask;    // [B, L] int64 on `device`, 1 on real rows; undefined when all ones
};

// §4.3 steps 1-5 for one batch of prompts (positive and negative prompts are separate calls, never padded
// to each other): tokenize with max_length 1024 + prefix, run the LM to the hidden state after its final
// norm, keep the real tokens, drop the template prefix, re-pad with zero rows on the right, keep the first
// `max_sequence_length` rows (at most 1024, as the reference), and leave the mask undefined when it is
// all ones (a single prompt never has one).
PromptEmbeds encode_prompts(const text::Tokenizer& tokenizer, const llm::DecoderLM& text_encoder,
                            const std::vector<std::string>& prompts, int64_t max_sequence_length,
                            at::ScalarType dtype, const at::Device& device);

}  // namespace ditgen::qwen_image
