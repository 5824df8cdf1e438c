#pragma once
// A small backtracking regex engine over Unicode code points, for the pre-tokenizer patterns of
// tokenizer.json files (docs/reference/tokenizers.md). Semantics follow Oniguruma, which the
// tokenizers library uses: leftmost-first alternation, greedy quantifiers that give back one code
// point at a time, atomic lookaheads, `\s` = Unicode White_Space, `\p{..}` = general categories.
//
// Supported: literals and escapes (\t \n \r \f \v \e \0 \xHH \x{H..} \uHHHH), `.`, classes with
// ranges / negation / nested escapes, \s \S \d \D \w \W \h \H, \p{X} \P{X} \p{^X} for general
// categories (L Lu Ll Lt Lm Lo L& M Mn Mc Me N Nd Nl No P* S* Z* C* and long names such as Letter),
// groups (capturing, (?:..), (?<name>..), (?i:..), (?-i:..), (?i) for the rest of the group),
// lookaheads (?=..) (?!..), atomic groups (?>..), quantifiers ? * + {m} {m,} {m,n} with lazy (?)
// and possessive (+) forms, anchors ^ $ \A \z \Z \b \B. Anything else is rejected with an error
// naming the pattern and the position.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ditgen::text {

class UnicodeRegex {
 public:
  // Throws ditgen::Error on syntax the engine does not support.
  explicit UnicodeRegex(const std::string& pattern);

  // Leftmost match starting at or after `from` (code point indices). Empty matches are reported.
  bool search(const std::u32string& text, size_t from, size_t* begin, size_t* end) const;
  // Whether the whole of `text` matches (anchored at both ends).
  bool full_match(const std::u32string& text) const;
  // Successive non-overlapping, non-empty matches as [begin, end) code point ranges.
  std::vector<std::pair<size_t, size_t>> find_all(const std::u32string& text) const;
  // The same over UTF-8 text, as byte ranges.
  std::vector<std::pair<size_t, size_t>> find_all_utf8(const std::string& text) const;

  const std::string& pattern() const { return pattern_; }

  // Character class item (public for the parser in the .cpp).
  struct ClassItem {
    enum Kind : uint8_t { Range, Category, Space, Word, Digit, HSpace, Any } kind = Range;
    bool negated = false;
    char32_t lo = 0, hi = 0;
    uint32_t categories = 0;  // bit per utf8proc category
  };
  struct CharClass {
    std::vector<ClassItem> items;
    bool negated = false;
    bool icase = false;
    bool matches(char32_t c) const;
  };
  struct Node {
    enum Kind : uint8_t {
      Empty,
      Class,
      Concat,
      Alt,
      Repeat,
      LookAhead,
      Atomic,
      Begin,
      End,
      EndBeforeNewline,
      LineBegin,
      LineEnd,
      WordBoundary,
      NotWordBoundary
    } kind = Empty;
    CharClass cls;
    std::vector<int> kids;
    int min = 0, max = -1;  // Repeat; max -1 = unbounded
    bool greedy = true, possessive = false;
    bool negated = false;  // LookAhead
  };

 private:
  struct Cont;
  struct Ctx;
  bool match_node(const Ctx& cx, int n, size_t pos, const Cont* k, size_t* end) const;
  bool resume(const Ctx& cx, const Cont* k, size_t pos, size_t* end) const;
  bool repeat_step(const Ctx& cx, int n, int count, size_t iter_start, size_t pos, const Cont* k,
                   size_t* end) const;

  std::string pattern_;
  std::vector<Node> nodes_;
  int root_ = 0;
  int full_root_ = 0;  // root then \z
  friend class RegexParser;
};

// Unicode White_Space (what Oniguruma's \s matches).
bool is_unicode_space(char32_t c);

}  // namespace ditgen::text
