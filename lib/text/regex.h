#pragma once
// The regex patterns of tokenizer.json files (Split / Replace patterns, the built-in GPT-2, Tekken
// and Qwen2 patterns) compiled by Oniguruma, the engine the tokenizers library uses: compiled as its
// `onig::Regex::new` compiles them (UTF-8, Oniguruma's default syntax, no options), searched as its
// `find_iter` searches (docs/reference/tokenizers.md). So `\p{..}` properties, `(?i:..)`,
// lookarounds, possessive and atomic forms mean exactly what they mean to the reference.
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

struct re_pattern_buffer;  // Oniguruma's compiled pattern (OnigRegex); its header stays in regex.cpp

namespace ditgen::text {

class Regex {
 public:
  // Compiles once. Throws ditgen::Error "regex '<pattern>': <Oniguruma's message>" on a bad pattern.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Successive matches over UTF-8 `text` as byte ranges [begin, end), as onig's find_iter yields them:
  // leftmost-first, non-overlapping; empty matches are reported too (the next search then starts one
  // code point further on), except the first empty match after a non-empty one. Safe to call from
  // several threads at once. Throws ditgen::Error on text that is not valid UTF-8.
  std::vector<std::pair<size_t, size_t>> find_all(const std::string& text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  re_pattern_buffer* re_ = nullptr;
};

}  // namespace ditgen::text
