#include "models/qwen_image/prompt.h"

#include <algorithm>

#include "lib/runtime/error.h"

namespace ditgen::qwen_image {

const char* const kSystemMessage =
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial relationships "
    "of "
    "the objects and background:";
const char* const kTemplatePrefix =
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n";
const char* const kTemplateSuffix = "<|im_end|>\n<|im_start|>assistant\n";

namespace {

// The pad id, after checking that the template's special tokens are tokens of this vocabulary (without
// them the template would be tokenized as plain text and the prefix count would be meaningless).
int64_t pad_id(const text::Tokenizer& tokenizer) {
  for (const char* t : {"<|im_start|>", "<|im_end|>"})
    DITGEN_CHECK(tokenizer.token_to_id(t).has_value(),
                 "the Qwen-Image tokenizer has no '{}' token, which its prompt template needs "
                 "(docs/reference/qwen-image.md 4.2)",
                 t);
  const auto pad = tokenizer.token_to_id("<|endoftext|>");
  DITGEN_CHECK(pad.has_value(),
               "the Qwen-Image tokenizer has no '<|endoftext|>' token; prompts are padded with it "
               "(docs/reference/qwen-image.md 4.3)");
  return *pad;
}

}  // namespace

std::string chat_prompt(const std::string& user_prompt) {
  return std::string(kTemplatePrefix) + user_prompt + kTemplateSuffix;
}

int64_t template_prefix_tokens(const text::Tokenizer& tokenizer) {
  pad_id(tokenizer);
  return static_cast<int64_t>(tokenizer.encode(kTemplatePrefix, /*add_special_tokens=*/false).size());
}

TokenBatch tokenize(const text::Tokenizer& tokenizer, const std::vector<std::string>& prompts,
                    int64_t max_length) {
  DITGEN_CHECK(!prompts.empty(), "qwen_image::tokenize: no prompts");
  DITGEN_CHECK(max_length > 0, "qwen_image::tokenize: max_length must be positive (got {})", max_length);
  const int64_t pad = pad_id(tokenizer);
  std::vector<std::vector<int64_t>> tokens;
  for (const auto& p : prompts)
    tokens.push_back(tokenizer.encode(chat_prompt(p), /*add_special_tokens=*/false));
  return text::pad_tokens(std::move(tokens), max_length, pad, text::PadSide::Right, /*to_longest=*/true);
}

PromptEmbeds encode_prompts(const text::Tokenizer& tokenizer, const llm::DecoderLM& text_encoder,
                            const std::vector<std::string>& prompts, int64_t max_sequence_length,
                            at::ScalarType dtype, const at::Device& device) {
  DITGEN_CHECK(max_sequence_length > 0 && max_sequence_length <= kMaxPromptTokens,
               "Qwen-Image: max_sequence_length must be 1..{} (got {}), as in the reference pipeline",
               kMaxPromptTokens, max_sequence_length);
  const int64_t prefix = template_prefix_tokens(tokenizer);
  const TokenBatch tokens = tokenize(tokenizer, prompts, kMaxPromptTokens + prefix);
  // hidden_states[-1] of the reference = the output of the final norm.
  const int final_norm = text_encoder.config().num_hidden_layers;
  const at::Tensor hs =
      text_encoder.forward(tokens.input_ids, tokens.attention_mask, {final_norm})[0];  // [B, L, hidden]

  // Per prompt: the real tokens (wherever the padding is), less the template prefix.
  const int64_t batch = hs.size(0), hidden = hs.size(2);
  std::vector<at::Tensor> kept(batch);  // [n_b, hidden]
  int64_t longest = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const at::Tensor real = at::nonzero(tokens.attention_mask[b]).squeeze(1).to(hs.device());
    const at::Tensor rows = hs[b].index_select(0, real);
    const int64_t skip = std::min(prefix, rows.size(0));
    kept[b] = rows.narrow(0, skip, rows.size(0) - skip);
    longest = std::max(longest, kept[b].size(0));
  }

  // Zero rows on the right up to the longest, then at most max_sequence_length rows.
  const int64_t len = std::min(longest, max_sequence_length);
  PromptEmbeds out;
  out.embeds = at::zeros({batch, len, hidden}, at::TensorOptions().dtype(dtype).device(device));
  out.mask = at::zeros({batch, len}, at::TensorOptions().dtype(at::kLong).device(device));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t n = std::min(kept[b].size(0), len);
    out.embeds[b].narrow(0, 0, n).copy_(kept[b].narrow(0, 0, n));
    out.mask[b].narrow(0, 0, n).fill_(1);
  }
  if (out.mask.eq(1).all().item<bool>()) out.mask = at::Tensor();
  return out;
}

}  // namespace ditgen::qwen_image
