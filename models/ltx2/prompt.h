#pragma once
// LTX-2 prompt encoding (docs/reference/ltx2.md §2, "How LTX-2 calls it"): the stripped prompt is
// tokenized with <bos>, cut and LEFT-padded with <pad> to exactly `max_length` tokens, run through the
// Gemma 3 text model (positions 0..L-1 whatever the padding), and every hidden state (the scaled
// embeddings, each layer's output, the last one after the final norm) is stacked on a new last axis and
// flattened: feature d * (layers + 1) + l. The text connectors take it from there.
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "lib/text/token_batch.h"
#include "lib/text/tokenizer.h"
#include "models/llm/decoder.h"

namespace ditgen::ltx2 {

using TokenBatch = text::TokenBatch;  // ids and mask [B, L] int64, CPU

// Python's str.strip() for the whitespace a prompt carries (ASCII whitespace and U+0085, U+00A0, U+3000
// and the other Unicode spaces).
std::string strip(const std::string& s);

// Fails naming the tokenizer's missing token when it has no <pad>.
TokenBatch tokenize(const text::Tokenizer& tokenizer, const std::vector<std::string>& prompts, int64_t max_length);

struct PromptStates {
  at::Tensor states;  // [B, L, hidden * (layers + 1)] in the text encoder's dtype and device
  at::Tensor mask;    // [B, L] int64 on the same device
};

PromptStates encode_prompts(const text::Tokenizer& tokenizer, const llm::DecoderLM& text_encoder,
                            const std::vector<std::string>& prompts, int64_t max_length);

}  // namespace ditgen::ltx2
