#pragma once
// The stages of a tokenizer.json besides the model: normalizer, pre-tokenizer, post-processor,
// decoder. Each is built from its JSON object; an unknown "type" is an error that names the file
// and the type (docs/reference/tokenizers.md).
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ditgen::text {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(const std::string& s) const = 0;
};

// One piece of text on its way through the pre-tokenizers. `at_start`: the piece begins the input
// text (Metaspace's prepend_scheme "first" needs to know).
struct Piece {
  std::string text;
  bool at_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void split(std::vector<Piece>& pieces) const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens of a single sequence (only called with add_special_tokens).
  virtual void process(std::vector<int64_t>& ids) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Transforms the token strings; the caller joins the result.
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Resolves a special-token string to its id (TemplateProcessing / Bert / Roberta name tokens).
using TokenLookup = std::function<int64_t(const std::string& token, const std::string& context)>;

// Each returns nullptr for a JSON null (the stage is absent).
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j, const std::string& where,
                                                   const TokenLookup& lookup);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& where);

// GPT-2's reversible byte -> printable code point table (ByteLevel).
const char32_t* byte_to_unicode_table();  // 256 entries
// Maps every byte of `s` to its stand-in and returns the UTF-8 of the result.
std::string byte_level_encode(const std::string& s);

}  // namespace ditgen::text
