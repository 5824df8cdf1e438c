#pragma once
// HF `tokenizer.json` tokenizers (byte-level BPE as in Qwen / Mistral Tekken, SentencePiece-style
// BPE as in Gemma 3). One implementation interprets the file: added tokens, normalizer,
// pre-tokenizer, BPE model, post-processor and decoder. See docs/reference/tokenizers.md.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace ditgen::text {

class Tokenizer {
 public:
  // Reads tokenizer.json or tokenizer.json.gz (gzip or plain, detected from the content); a folder
  // is searched for either name, and without them is read as a Qwen2Tokenizer folder (vocab.json,
  // merges.txt, tokenizer_config.json; lib/text/qwen2_tokenizer.h).
  static std::shared_ptr<Tokenizer> from_file(const std::string& path);
  // `where` names the source in error messages.
  static std::shared_ptr<Tokenizer> from_json(const nlohmann::json& j, const std::string& where);
  virtual ~Tokenizer() = default;

  // Text must be valid UTF-8 (an error says where it is not).
  virtual std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const = 0;
  virtual std::optional<int64_t> token_to_id(const std::string& token) const = 0;
  virtual std::optional<std::string> id_to_token(int64_t id) const = 0;
  virtual int64_t vocab_size() const = 0;  // largest id + 1
};

}  // namespace ditgen::text
