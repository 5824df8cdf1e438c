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
  std::vector<std::vector<int64_t>> tokens;
  for (const auto& p : prompts)
    tokens.push_back(tokenizer.encode(flux2_chat_prompt(p), /*add_special_tokens=*/false));
  return text::pad_tokens(std::move(tokens), max_length, *pad, text::PadSide::Left);
}

}  // namespace ditgen::flux2
