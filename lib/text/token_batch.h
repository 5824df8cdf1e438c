#pragma once
// A batch of tokenized prompts as the text encoders take it: ids and an attention mask, padded to one
// length. The models differ only in which side they pad and how long the batch is (flux2, ltx2: on the
// left to max_length; qwen_image: on the right to the longest prompt).
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace ditgen::text {

struct TokenBatch {
  at::Tensor input_ids;       // [B, L] int64, CPU
  at::Tensor attention_mask;  // [B, L] int64, CPU: 1 on real tokens, 0 on pads
};

enum class PadSide { Left, Right };

// `tokens` (one list per prompt), each cut on the right to `max_length` (an overlong prompt loses its
// suffix), padded with `pad` on `side` to L = max_length, or with `to_longest` to the longest list.
TokenBatch pad_tokens(std::vector<std::vector<int64_t>> tokens, int64_t max_length, int64_t pad, PadSide side,
                      bool to_longest = false);

}  // namespace ditgen::text
