#include "models/ltx2/prompt.h"

#include <cstring>

#include "lib/runtime/error.h"

namespace ditgen::ltx2 {

namespace {

// The length in bytes of the whitespace code point starting at s[i], or 0 (Python's str.isspace set).
size_t space_at(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
  auto starts = [&](const char* seq) { return s.compare(i, std::strlen(seq), seq) == 0 ? std::strlen(seq) : 0; };
  for (const char* seq : {"\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\xa8", "\xe2\x80\xa9", "\xe2\x80\xaf",
                          "\xe2\x81\x9f", "\xe3\x80\x80"})
    if (size_t n = starts(seq)) return n;
  if (c == 0xe2 && i + 2 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0x80) {
    const auto d = static_cast<unsigned char>(s[i + 2]);  // U+2000..U+200A
    if (d >= 0x80 && d <= 0x8a) return 3;
  }
  return 0;
}

// The byte offset where the trailing whitespace starts.
size_t trailing_space_start(const std::string& s, size_t from) {
  size_t end = from;
  for (size_t i = from; i < s.size();) {
    const size_t n = space_at(s, i);
    if (n) {
      i += n;
    } else {
      // A non-space code point: skip it whole (its continuation bytes are never spaces).
      ++i;
      while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xc0) == 0x80) ++i;
      end = i;
    }
  }
  return end;
}

}  // namespace

std::string strip(const std::string& s) {
  size_t begin = 0;
  while (begin < s.size()) {
    const size_t n = space_at(s, begin);
    if (!n) break;
    begin += n;
  }
  return s.substr(begin, trailing_space_start(s, begin) - begin);
}

TokenBatch tokenize(const text::Tokenizer& tokenizer, const std::vector<std::string>& prompts, int64_t max_length) {
  DITGEN_CHECK(max_length > 0, "--max-sequence-length must be positive, got {}", max_length);
  const auto pad = tokenizer.token_to_id("<pad>");
  DITGEN_CHECK(pad.has_value(), "the tokenizer has no '<pad>' token, which LTX-2's prompt padding needs (is it "
                                "Gemma 3's tokenizer?)");
  std::vector<std::vector<int64_t>> tokens;
  for (const auto& p : prompts) tokens.push_back(tokenizer.encode(strip(p), /*add_special_tokens=*/true));
  return text::pad_tokens(std::move(tokens), max_length, *pad, text::PadSide::Left);
}

PromptStates encode_prompts(const text::Tokenizer& tokenizer, const llm::DecoderLM& text_encoder,
                            const std::vector<std::string>& prompts, int64_t max_length) {
  const TokenBatch tokens = tokenize(tokenizer, prompts, max_length);
  std::vector<int> wanted;
  for (int k = 0; k <= text_encoder.config().num_hidden_layers; ++k) wanted.push_back(k);
  const std::vector<at::Tensor> hs = text_encoder.forward(tokens.input_ids, tokens.attention_mask, wanted);
  PromptStates out;
  out.states = at::stack(hs, -1).flatten(2);  // [B, L, hidden, layers + 1] -> feature d * (layers + 1) + l
  out.mask = tokens.attention_mask.to(out.states.device());
  return out;
}

}  // namespace ditgen::ltx2
