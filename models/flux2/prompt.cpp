#include "models/flux2/prompt.h"

#include "lib/runtime/error.h"

namespace ditgen::flux2 {

const char* const kSystemMessage =
    "You are an AI that reasons about image descriptions. You give structured responses focusing on object "
    "relationships, object\nattribution and actions without speculation.";

std::string flux2_chat_prompt(const std::string& user_prompt) {
  // The pipeline strips image placeholders: FLUX.2 text-to-image passes no images to the encoder.
  std::string prompt;
  prompt.reserve(user_prompt.size());
  const std::string img = "[IMG]";
  for (size_t i = 0; i < user_prompt.size();) {
    if (user_prompt.compare(i, img.size(), img) == 0) {
      i += img.size();
    } else {
      prompt += user_prompt[i++];
    }
  }
  return std::string("<s>[SYSTEM_PROMPT]") + kSystemMessage + "[/SYSTEM_PROMPT][INST]" + prompt + "[/INST]";
}

TokenBatch flux2_tokenize(const text::Tokenizer& tokenizer, const std::vector<std::string>& prompts,
                          int64_t max_length) {
  DITGEN_CHECK(!prompts.empty(), "flux2_tokenize: no prompts");
  DITGEN_CHECK(max_length > 0, "flux2_tokenize: max_length must be positive (got {})", max_length);
  const auto pad = tokenizer.token_to_id("<pad>");
  DITGEN_CHECK(pad.has_value(),
               "the FLUX.2 tokenizer has no '<pad>' token; its prompts are left-padded with it "
               "(docs/reference/flux2.md 4.2)");
  const auto batch = static_cast<int64_t>(prompts.size());
  at::Tensor ids = at::full({batch, max_length}, *pad, at::kLong);
  at::Tensor mask = at::zeros({batch, max_length}, at::kLong);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int64_t> tok = tokenizer.encode(flux2_chat_prompt(prompts[b]), /*add_special_tokens=*/false);
    if (static_cast<int64_t>(tok.size()) > max_length) tok.resize(max_length);  // right truncation
    const int64_t offset = max_length - static_cast<int64_t>(tok.size());       // left padding
    for (size_t i = 0; i < tok.size(); ++i) {
      ids_a[b][offset + static_cast<int64_t>(i)] = tok[i];
      mask_a[b][offset + static_cast<int64_t>(i)] = 1;
    }
  }
  return TokenBatch{ids, mask};
}

}  // namespace ditgen::flux2
