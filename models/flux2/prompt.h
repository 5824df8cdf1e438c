#pragma once
// FLUX.2 prompt formatting and tokenization for the Mistral text encoder
// (docs/reference/flux2.md 4.1-4.2).
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lib/text/token_batch.h"
#include "lib/text/tokenizer.h"

namespace ditgen::flux2 {

// SYSTEM_MESSAGE of diffusers' pipelines/flux2/system_messages.py.
extern const char* const kSystemMessage;

// "<s>[SYSTEM_PROMPT]{system}[/SYSTEM_PROMPT][INST]{prompt}[/INST]", with every "[IMG]" removed from
// the user prompt first.
std::string flux2_chat_prompt(const std::string& user_prompt);

using TokenBatch = text::TokenBatch;  // ids and mask [B, L] int64, CPU

// Formats each user prompt with flux2_chat_prompt, encodes it without added special tokens (the
// text already starts with <s>), truncates on the right to `max_length` and pads on the LEFT with
// the tokenizer's <pad> id up to `max_length` (padding="max_length", as the reference calls it).
TokenBatch flux2_tokenize(const text::Tokenizer& tokenizer, const std::vector<std::string>& prompts,
                          int64_t max_length = 512);

}  // namespace ditgen::flux2
