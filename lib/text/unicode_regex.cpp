#include "lib/text/unicode_regex.h"

#include <utf8proc.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <limits>

#include "lib/runtime/error.h"
#include "lib/text/utf8.h"

namespace ditgen::text {

namespace {

constexpr uint32_t cat_bit(int c) { return 1u << c; }
constexpr uint32_t kLetter = cat_bit(UTF8PROC_CATEGORY_LU) | cat_bit(UTF8PROC_CATEGORY_LL) |
                             cat_bit(UTF8PROC_CATEGORY_LT) | cat_bit(UTF8PROC_CATEGORY_LM) |
                             cat_bit(UTF8PROC_CATEGORY_LO);
constexpr uint32_t kMark =
    cat_bit(UTF8PROC_CATEGORY_MN) | cat_bit(UTF8PROC_CATEGORY_MC) | cat_bit(UTF8PROC_CATEGORY_ME);
constexpr uint32_t kNumber =
    cat_bit(UTF8PROC_CATEGORY_ND) | cat_bit(UTF8PROC_CATEGORY_NL) | cat_bit(UTF8PROC_CATEGORY_NO);
constexpr uint32_t kPunct = cat_bit(UTF8PROC_CATEGORY_PC) | cat_bit(UTF8PROC_CATEGORY_PD) |
                            cat_bit(UTF8PROC_CATEGORY_PS) | cat_bit(UTF8PROC_CATEGORY_PE) |
                            cat_bit(UTF8PROC_CATEGORY_PI) | cat_bit(UTF8PROC_CATEGORY_PF) |
                            cat_bit(UTF8PROC_CATEGORY_PO);
constexpr uint32_t kSymbol = cat_bit(UTF8PROC_CATEGORY_SM) | cat_bit(UTF8PROC_CATEGORY_SC) |
                             cat_bit(UTF8PROC_CATEGORY_SK) | cat_bit(UTF8PROC_CATEGORY_SO);
constexpr uint32_t kSeparator =
    cat_bit(UTF8PROC_CATEGORY_ZS) | cat_bit(UTF8PROC_CATEGORY_ZL) | cat_bit(UTF8PROC_CATEGORY_ZP);
constexpr uint32_t kOther = cat_bit(UTF8PROC_CATEGORY_CN) | cat_bit(UTF8PROC_CATEGORY_CC) |
                            cat_bit(UTF8PROC_CATEGORY_CF) | cat_bit(UTF8PROC_CATEGORY_CS) |
                            cat_bit(UTF8PROC_CATEGORY_CO);
// Oniguruma's \w (Unicode): Letter | Mark | Number | Connector_Punctuation.
constexpr uint32_t kWord = kLetter | kMark | kNumber | cat_bit(UTF8PROC_CATEGORY_PC);

inline uint32_t category_bit(char32_t c) {
  return cat_bit(utf8proc_category(static_cast<utf8proc_int32_t>(c)));
}

bool is_word_char(char32_t c) { return (category_bit(c) & kWord) != 0; }

// General-category names accepted in \p{..}, compared without case, spaces, '_' and '-'.
bool category_mask(const std::string& raw, uint32_t* mask) {
  std::string name;
  for (char ch : raw)
    if (ch != '_' && ch != ' ' && ch != '-')
      name += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  struct Entry {
    const char* name;
    uint32_t mask;
  };
  static const Entry table[] = {
      {"l", kLetter},
      {"letter", kLetter},
      {"lu", cat_bit(UTF8PROC_CATEGORY_LU)},
      {"uppercaseletter", cat_bit(UTF8PROC_CATEGORY_LU)},
      {"ll", cat_bit(UTF8PROC_CATEGORY_LL)},
      {"lowercaseletter", cat_bit(UTF8PROC_CATEGORY_LL)},
      {"lt", cat_bit(UTF8PROC_CATEGORY_LT)},
      {"titlecaseletter", cat_bit(UTF8PROC_CATEGORY_LT)},
      {"lm", cat_bit(UTF8PROC_CATEGORY_LM)},
      {"modifierletter", cat_bit(UTF8PROC_CATEGORY_LM)},
      {"lo", cat_bit(UTF8PROC_CATEGORY_LO)},
      {"otherletter", cat_bit(UTF8PROC_CATEGORY_LO)},
      {"lc", cat_bit(UTF8PROC_CATEGORY_LU) | cat_bit(UTF8PROC_CATEGORY_LL) | cat_bit(UTF8PROC_CATEGORY_LT)},
      {"l&", cat_bit(UTF8PROC_CATEGORY_LU) | cat_bit(UTF8PROC_CATEGORY_LL) | cat_bit(UTF8PROC_CATEGORY_LT)},
      {"casedletter",
       cat_bit(UTF8PROC_CATEGORY_LU) | cat_bit(UTF8PROC_CATEGORY_LL) | cat_bit(UTF8PROC_CATEGORY_LT)},
      {"m", kMark},
      {"mark", kMark},
      {"combiningmark", kMark},
      {"mn", cat_bit(UTF8PROC_CATEGORY_MN)},
      {"nonspacingmark", cat_bit(UTF8PROC_CATEGORY_MN)},
      {"mc", cat_bit(UTF8PROC_CATEGORY_MC)},
      {"spacingmark", cat_bit(UTF8PROC_CATEGORY_MC)},
      {"me", cat_bit(UTF8PROC_CATEGORY_ME)},
      {"enclosingmark", cat_bit(UTF8PROC_CATEGORY_ME)},
      {"n", kNumber},
      {"number", kNumber},
      {"nd", cat_bit(UTF8PROC_CATEGORY_ND)},
      {"decimalnumber", cat_bit(UTF8PROC_CATEGORY_ND)},
      {"digit", cat_bit(UTF8PROC_CATEGORY_ND)},
      {"nl", cat_bit(UTF8PROC_CATEGORY_NL)},
      {"letternumber", cat_bit(UTF8PROC_CATEGORY_NL)},
      {"no", cat_bit(UTF8PROC_CATEGORY_NO)},
      {"othernumber", cat_bit(UTF8PROC_CATEGORY_NO)},
      {"p", kPunct},
      {"punctuation", kPunct},
      {"punct", kPunct},
      {"pc", cat_bit(UTF8PROC_CATEGORY_PC)},
      {"connectorpunctuation", cat_bit(UTF8PROC_CATEGORY_PC)},
      {"pd", cat_bit(UTF8PROC_CATEGORY_PD)},
      {"dashpunctuation", cat_bit(UTF8PROC_CATEGORY_PD)},
      {"ps", cat_bit(UTF8PROC_CATEGORY_PS)},
      {"openpunctuation", cat_bit(UTF8PROC_CATEGORY_PS)},
      {"pe", cat_bit(UTF8PROC_CATEGORY_PE)},
      {"closepunctuation", cat_bit(UTF8PROC_CATEGORY_PE)},
      {"pi", cat_bit(UTF8PROC_CATEGORY_PI)},
      {"initialpunctuation", cat_bit(UTF8PROC_CATEGORY_PI)},
      {"pf", cat_bit(UTF8PROC_CATEGORY_PF)},
      {"finalpunctuation", cat_bit(UTF8PROC_CATEGORY_PF)},
      {"po", cat_bit(UTF8PROC_CATEGORY_PO)},
      {"otherpunctuation", cat_bit(UTF8PROC_CATEGORY_PO)},
      {"s", kSymbol},
      {"symbol", kSymbol},
      {"sm", cat_bit(UTF8PROC_CATEGORY_SM)},
      {"mathsymbol", cat_bit(UTF8PROC_CATEGORY_SM)},
      {"sc", cat_bit(UTF8PROC_CATEGORY_SC)},
      {"currencysymbol", cat_bit(UTF8PROC_CATEGORY_SC)},
      {"sk", cat_bit(UTF8PROC_CATEGORY_SK)},
      {"modifiersymbol", cat_bit(UTF8PROC_CATEGORY_SK)},
      {"so", cat_bit(UTF8PROC_CATEGORY_SO)},
      {"othersymbol", cat_bit(UTF8PROC_CATEGORY_SO)},
      {"z", kSeparator},
      {"separator", kSeparator},
      {"zs", cat_bit(UTF8PROC_CATEGORY_ZS)},
      {"spaceseparator", cat_bit(UTF8PROC_CATEGORY_ZS)},
      {"zl", cat_bit(UTF8PROC_CATEGORY_ZL)},
      {"lineseparator", cat_bit(UTF8PROC_CATEGORY_ZL)},
      {"zp", cat_bit(UTF8PROC_CATEGORY_ZP)},
      {"paragraphseparator", cat_bit(UTF8PROC_CATEGORY_ZP)},
      {"c", kOther},
      {"other", kOther},
      {"cc", cat_bit(UTF8PROC_CATEGORY_CC)},
      {"control", cat_bit(UTF8PROC_CATEGORY_CC)},
      {"cntrl", cat_bit(UTF8PROC_CATEGORY_CC)},
      {"cf", cat_bit(UTF8PROC_CATEGORY_CF)},
      {"format", cat_bit(UTF8PROC_CATEGORY_CF)},
      {"cs", cat_bit(UTF8PROC_CATEGORY_CS)},
      {"surrogate", cat_bit(UTF8PROC_CATEGORY_CS)},
      {"co", cat_bit(UTF8PROC_CATEGORY_CO)},
      {"privateuse", cat_bit(UTF8PROC_CATEGORY_CO)},
      {"cn", cat_bit(UTF8PROC_CATEGORY_CN)},
      {"unassigned", cat_bit(UTF8PROC_CATEGORY_CN)},
      {"any", 0xFFFFFFFFu},
  };
  for (const auto& e : table)
    if (name == e.name) {
      *mask = e.mask;
      return true;
    }
  return false;
}

using Item = UnicodeRegex::ClassItem;
using Node = UnicodeRegex::Node;

Item range_item(char32_t lo, char32_t hi) {
  Item it;
  it.kind = Item::Range;
  it.lo = lo;
  it.hi = hi;
  return it;
}

}  // namespace

static char32_t case_fold(char32_t c);

bool is_unicode_space(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

namespace {

bool item_matches(const Item& it, char32_t c) {
  bool m = false;
  switch (it.kind) {
    case Item::Range:
      m = c >= it.lo && c <= it.hi;
      break;
    case Item::Category:
      m = (category_bit(c) & it.categories) != 0;
      break;
    case Item::Space:
      m = is_unicode_space(c);
      break;
    case Item::Word:
      m = is_word_char(c);
      break;
    case Item::Digit:
      m = utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_ND;
      break;
    case Item::HSpace:
      m = c == 0x09 || (is_unicode_space(c) && c != 0x0A && c != 0x0B && c != 0x0C && c != 0x0D &&
                        c != 0x85 && c != 0x2028 && c != 0x2029);
      break;
    case Item::Any:
      m = true;
      break;
  }
  return m != it.negated;
}

}  // namespace

static char32_t case_fold(char32_t c) {
  // Simple case folding: the full folding when it is one code point (U+017F -> 's', U+212A -> 'k').
  utf8proc_int32_t buf[4];
  int boundclass = 0;
  const auto n =
      utf8proc_decompose_char(static_cast<utf8proc_int32_t>(c), buf, 4, UTF8PROC_CASEFOLD, &boundclass);
  return n == 1 ? static_cast<char32_t>(buf[0]) : c;
}

bool UnicodeRegex::CharClass::matches(char32_t c) const {
  auto core = [this](char32_t x) {
    for (const auto& it : items)
      if (item_matches(it, x)) return true;
    return false;
  };
  bool m = core(c);
  if (!m && icase) {
    // Case-insensitive: the folded, lower- and upper-case forms as well (single code points of
    // the pattern were added in folded form too, see RegexParser::fold_items).
    const char32_t f = case_fold(c);
    const auto lo = static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c)));
    const auto up = static_cast<char32_t>(utf8proc_toupper(static_cast<utf8proc_int32_t>(c)));
    m = (f != c && core(f)) || (lo != c && core(lo)) || (up != c && core(up));
  }
  return m != negated;
}

// ---------------------------------------------------------------------------------------------
// Parser: recursive descent over the pattern's code points.

class RegexParser {
 public:
  RegexParser(UnicodeRegex& re, const std::string& pattern)
      : re_(re), pattern_(pattern), p_(decode_utf8(pattern, "regex pattern").cps) {}

  void parse() {
    const int root = parse_alt();
    if (i_ < p_.size()) error("unmatched ')'");
    re_.root_ = root;
    // root followed by \z, for full_match.
    Node full;
    full.kind = Node::Concat;
    full.kids.push_back(root);
    full.kids.push_back(add_kind(Node::End));
    re_.full_root_ = add(std::move(full));
  }

 private:
  [[noreturn]] void error(const std::string& what) const {
    fail("regex '{}': {} at position {}", pattern_, what, i_);
  }
  bool eof() const { return i_ >= p_.size(); }
  char32_t peek(size_t ahead = 0) const { return i_ + ahead < p_.size() ? p_[i_ + ahead] : 0; }
  char32_t next() {
    if (eof()) error("unexpected end of pattern");
    return p_[i_++];
  }

  int add(Node n) {
    re_.nodes_.push_back(std::move(n));
    return static_cast<int>(re_.nodes_.size()) - 1;
  }
  int add_kind(Node::Kind k) {
    Node n;
    n.kind = k;
    return add(std::move(n));
  }
  // Under (?i), a single code point of the pattern also matches through its case folding.
  static void fold_items(UnicodeRegex::CharClass& cls) {
    if (!cls.icase) return;
    const size_t n = cls.items.size();
    for (size_t i = 0; i < n; ++i) {
      const Item it = cls.items[i];
      if (it.kind != Item::Range || it.lo != it.hi || it.negated) continue;
      const char32_t f = case_fold(it.lo);
      if (f != it.lo) cls.items.push_back(range_item(f, f));
    }
  }
  int add_class(UnicodeRegex::CharClass cls) {
    fold_items(cls);
    Node n;
    n.kind = Node::Class;
    n.cls = std::move(cls);
    return add(std::move(n));
  }
  int add_literal(char32_t c) {
    UnicodeRegex::CharClass cls;
    cls.items.push_back(range_item(c, c));
    cls.icase = icase_;
    return add_class(std::move(cls));
  }

  int parse_alt() {
    std::vector<int> alts{parse_concat()};
    while (!eof() && peek() == '|') {
      ++i_;
      alts.push_back(parse_concat());
    }
    if (alts.size() == 1) return alts[0];
    Node n;
    n.kind = Node::Alt;
    n.kids = std::move(alts);
    return add(std::move(n));
  }

  int parse_concat() {
    std::vector<int> kids;
    while (!eof() && peek() != '|' && peek() != ')') {
      const int k = parse_quantified();
      if (k >= 0) kids.push_back(k);
    }
    if (kids.empty()) return add_kind(Node::Empty);
    if (kids.size() == 1) return kids[0];
    Node n;
    n.kind = Node::Concat;
    n.kids = std::move(kids);
    return add(std::move(n));
  }

  // Reads "{m}", "{m,}", "{m,n}" at i_; leaves i_ unchanged and returns false if it is not one
  // (then '{' is a literal, as in Oniguruma).
  bool parse_braces(int* mn, int* mx) {
    size_t j = i_ + 1;
    auto read_int = [&](int* v) {
      size_t s = j;
      long long x = 0;
      while (j < p_.size() && p_[j] >= '0' && p_[j] <= '9') {
        x = x * 10 + (p_[j] - '0');
        if (x > 100000) error("repeat count too large");
        ++j;
      }
      *v = static_cast<int>(x);
      return j > s;
    };
    int a = 0, b = -1;
    const bool has_a = read_int(&a);
    if (j < p_.size() && p_[j] == '}') {
      if (!has_a) return false;
      b = a;
    } else if (j < p_.size() && p_[j] == ',') {
      ++j;
      int v;
      if (read_int(&v)) b = v;
      if (!has_a) a = 0;
      if (j >= p_.size() || p_[j] != '}') return false;
    } else {
      return false;
    }
    if (b >= 0 && b < a) error("repeat range {m,n} with n < m");
    i_ = j + 1;
    *mn = a;
    *mx = b;
    return true;
  }

  int parse_quantified() {
    int atom = parse_atom();
    if (atom < 0) return atom;  // a flag group such as (?i) that produced no node
    while (!eof()) {
      const char32_t c = peek();
      int mn = 0, mx = -1;
      const bool braces = c == '{' && parse_braces(&mn, &mx);  // consumes "{m,n}" when it is one
      if (!braces) {
        if (c == '?')
          mx = 1;
        else if (c == '+')
          mn = 1;
        else if (c != '*')
          break;
        ++i_;
      }
      const auto k = re_.nodes_[atom].kind;
      if (k == Node::Begin || k == Node::End || k == Node::LineBegin || k == Node::LineEnd ||
          k == Node::EndBeforeNewline || k == Node::WordBoundary || k == Node::NotWordBoundary)
        error("quantifier after an anchor");
      Node n;
      n.kind = Node::Repeat;
      n.kids.push_back(atom);
      n.min = mn;
      n.max = mx;
      if (!eof() && peek() == '?') {
        n.greedy = false;
        ++i_;
      } else if (!braces && !eof() && peek() == '+') {
        n.possessive = true;  // Ruby syntax: "{m,n}+" is a repeat of a repeat, not possessive
        ++i_;
      }
      atom = add(std::move(n));
    }
    return atom;
  }

  int parse_group() {
    // i_ is just past '('.
    const bool saved_icase = icase_;
    int body;
    if (peek() == '?') {
      ++i_;
      const char32_t c = next();
      if (c == ':') {
        body = parse_alt();
      } else if (c == '=' || c == '!') {
        Node n;
        n.kind = Node::LookAhead;
        n.negated = c == '!';
        n.kids.push_back(parse_alt());
        body = add(std::move(n));
      } else if (c == '>') {
        Node n;
        n.kind = Node::Atomic;
        n.kids.push_back(parse_alt());
        body = add(std::move(n));
      } else if (c == '<' && (peek() == '=' || peek() == '!')) {
        error("lookbehind is not supported");
      } else if (c == '<' || (c == 'P' && peek() == '<')) {
        if (c == 'P') ++i_;
        while (!eof() && peek() != '>') ++i_;  // named group: the name does not matter here
        if (eof()) error("unterminated group name");
        ++i_;
        body = parse_alt();
      } else if (c == 'i' || c == '-') {
        // Flag group: (?i) (?-i) (?i:...) (?-i:...).
        --i_;
        bool on = true;
        while (!eof() && peek() != ':' && peek() != ')') {
          const char32_t f = next();
          if (f == '-')
            on = false;
          else if (f == 'i')
            icase_ = on;
          else
            error(fmt::format("unsupported regex flag '{}'", to_utf8(f)));
        }
        if (eof()) error("unterminated group");
        if (next() == ')') return -1;  // (?i): applies to the rest of the enclosing group
        body = parse_alt();
      } else {
        error(fmt::format("unsupported group syntax '(?{}'", to_utf8(c)));
      }
    } else {
      body = parse_alt();
    }
    if (eof() || peek() != ')') error("missing ')'");
    ++i_;
    icase_ = saved_icase;
    return body;
  }

  int parse_atom() {
    const char32_t c = next();
    switch (c) {
      case '(':
        return parse_group();  // -1 for a bare flag group such as (?i)
      case ')':
        error("unmatched ')'");
      case '[':
        return add_class(parse_class());
      case '.': {
        UnicodeRegex::CharClass cls;
        cls.items.push_back(range_item('\n', '\n'));
        cls.negated = true;
        return add_class(std::move(cls));
      }
      case '^':
        return add_kind(Node::LineBegin);
      case '$':
        return add_kind(Node::LineEnd);
      case '*':
      case '+':
      case '?':
        error("nothing to repeat");
      case '\\':
        return parse_escape_atom();
      default:
        return add_literal(c);
    }
  }

  int parse_escape_atom() {
    const char32_t c = peek();
    switch (c) {
      case 'A':
        ++i_;
        return add_kind(Node::Begin);
      case 'z':
        ++i_;
        return add_kind(Node::End);
      case 'Z':
        ++i_;
        return add_kind(Node::EndBeforeNewline);
      case 'b':
        ++i_;
        return add_kind(Node::WordBoundary);
      case 'B':
        ++i_;
        return add_kind(Node::NotWordBoundary);
      default:
        break;
    }
    Item it;
    char32_t lit;
    if (parse_escape(&it, &lit)) {
      UnicodeRegex::CharClass cls;
      cls.items.push_back(it);
      cls.icase = icase_;
      return add_class(std::move(cls));
    }
    return add_literal(lit);
  }

  uint32_t parse_hex(size_t min_digits, size_t max_digits) {
    uint32_t v = 0;
    size_t n = 0;
    while (n < max_digits && !eof() && std::isxdigit(static_cast<int>(peek() < 128 ? peek() : 0))) {
      const char32_t h = next();
      v = v * 16 + (h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
      ++n;
    }
    if (n < min_digits) error("bad hexadecimal escape");
    return v;
  }

  // After '\': returns true with a class item (\s, \p{L}, ...) or false with a literal code point.
  bool parse_escape(Item* item, char32_t* lit) {
    const char32_t c = next();
    auto set = [&](Item::Kind k, bool neg) {
      item->kind = k;
      item->negated = neg;
      return true;
    };
    switch (c) {
      case 's':
        return set(Item::Space, false);
      case 'S':
        return set(Item::Space, true);
      case 'd':
        return set(Item::Digit, false);
      case 'D':
        return set(Item::Digit, true);
      case 'w':
        return set(Item::Word, false);
      case 'W':
        return set(Item::Word, true);
      case 'h':
        return set(Item::HSpace, false);
      case 'H':
        return set(Item::HSpace, true);
      case 'p':
      case 'P': {
        bool neg = c == 'P';
        std::string name;
        if (peek() == '{') {
          ++i_;
          if (peek() == '^') {
            neg = !neg;
            ++i_;
          }
          while (!eof() && peek() != '}') name += to_utf8(next());
          if (eof()) error("unterminated \\p{...}");
          ++i_;
        } else {
          name = to_utf8(next());
        }
        uint32_t mask;
        if (name == "White_Space" || name == "WhiteSpace" || name == "Space") return set(Item::Space, neg);
        if (!category_mask(name, &mask)) error(fmt::format("unsupported Unicode property '{}'", name));
        item->kind = Item::Category;
        item->negated = neg;
        item->categories = mask;
        return true;
      }
      case 't':
        *lit = '\t';
        return false;
      case 'n':
        *lit = '\n';
        return false;
      case 'r':
        *lit = '\r';
        return false;
      case 'f':
        *lit = '\f';
        return false;
      case 'v':
        *lit = '\v';
        return false;
      case 'a':
        *lit = 0x07;
        return false;
      case 'e':
        *lit = 0x1B;
        return false;
      case '0':
        *lit = static_cast<char32_t>(0);
        return false;
      case 'x':
        if (peek() == '{') {
          ++i_;
          *lit = parse_hex(1, 8);
          if (eof() || next() != '}') error("unterminated \\x{...}");
        } else {
          *lit = parse_hex(1, 2);
        }
        return false;
      case 'u':
        *lit = parse_hex(4, 4);
        return false;
      default:
        if (c < 128 && std::isalnum(static_cast<int>(c)))
          error(fmt::format("unsupported escape '\\{}'", static_cast<char>(c)));
        *lit = c;  // escaped punctuation is itself
        return false;
    }
  }

  UnicodeRegex::CharClass parse_class() {
    // i_ is just past '['.
    UnicodeRegex::CharClass cls;
    cls.icase = icase_;
    if (peek() == '^') {
      cls.negated = true;
      ++i_;
    }
    bool first = true;
    while (true) {
      if (eof()) error("unterminated character class");
      char32_t c = peek();
      if (c == ']' && !first) {
        ++i_;
        break;
      }
      first = false;
      if (c == '[') {
        if (peek(1) == ':') error("POSIX bracket classes are not supported");
        ++i_;
        // Nested class: its members join this one (union).
        UnicodeRegex::CharClass sub = parse_class();
        if (sub.negated) error("negated nested character classes are not supported");
        for (auto& it : sub.items) cls.items.push_back(it);
        continue;
      }
      if (c == '&' && peek(1) == '&') error("character class intersection '&&' is not supported");
      char32_t lo;
      ++i_;
      if (c == '\\') {
        Item it;
        if (parse_escape(&it, &lo)) {
          cls.items.push_back(it);
          continue;
        }
      } else {
        lo = c;
      }
      if (peek() == '-' && peek(1) != ']' && i_ + 1 < p_.size()) {
        ++i_;
        char32_t hi = next();
        if (hi == '\\') {
          Item it;
          if (parse_escape(&it, &hi)) error("a class escape cannot end a range");
        } else if (hi == '[') {
          error("a nested class cannot end a range");
        }
        if (hi < lo) error("character range out of order");
        cls.items.push_back(range_item(lo, hi));
      } else {
        cls.items.push_back(range_item(lo, lo));
      }
    }
    return cls;
  }

  UnicodeRegex& re_;
  const std::string& pattern_;
  std::u32string p_;
  size_t i_ = 0;
  bool icase_ = false;
};

// ---------------------------------------------------------------------------------------------
// Matcher: recursive backtracking with explicit continuations ("what remains to be matched after
// this node"), so that a quantifier can retry its continuation after giving back a code point.

struct UnicodeRegex::Cont {
  int node;  // a Concat (idx = next child) or a Repeat (idx = iterations done)
  int idx;
  size_t start;  // Repeat: where the last iteration began
  const Cont* next;
};

struct UnicodeRegex::Ctx {
  const char32_t* s;
  size_t n;
};

UnicodeRegex::UnicodeRegex(const std::string& pattern) : pattern_(pattern) {
  RegexParser(*this, pattern).parse();
}

bool UnicodeRegex::resume(const Ctx& cx, const Cont* k, size_t pos, size_t* end) const {
  if (!k) {
    *end = pos;
    return true;
  }
  const Node& nd = nodes_[k->node];
  if (nd.kind == Node::Concat) {
    const int last = static_cast<int>(nd.kids.size()) - 1;
    if (k->idx == last) return match_node(cx, nd.kids[last], pos, k->next, end);
    Cont c{k->node, k->idx + 1, 0, k->next};
    return match_node(cx, nd.kids[k->idx], pos, &c, end);
  }
  return repeat_step(cx, k->node, k->idx, k->start, pos, k->next, end);
}

bool UnicodeRegex::repeat_step(const Ctx& cx, int n, int count, size_t iter_start, size_t pos, const Cont* k,
                               size_t* end) const {
  const Node& nd = nodes_[n];
  // An iteration that consumed nothing would repeat forever: stop looping (Oniguruma does too).
  if (count > 0 && pos == iter_start) return resume(cx, k, pos, end);
  const bool can_more = nd.max < 0 || count < nd.max;
  Cont c{n, count + 1, pos, k};
  if (count < nd.min) return match_node(cx, nd.kids[0], pos, &c, end);
  if (nd.greedy) {
    if (can_more && match_node(cx, nd.kids[0], pos, &c, end)) return true;
    return resume(cx, k, pos, end);
  }
  if (resume(cx, k, pos, end)) return true;
  return can_more && match_node(cx, nd.kids[0], pos, &c, end);
}

bool UnicodeRegex::match_node(const Ctx& cx, int n, size_t pos, const Cont* k, size_t* end) const {
  const Node& nd = nodes_[n];
  switch (nd.kind) {
    case Node::Empty:
      return resume(cx, k, pos, end);
    case Node::Class:
      return pos < cx.n && nd.cls.matches(cx.s[pos]) && resume(cx, k, pos + 1, end);
    case Node::Concat: {
      Cont c{n, 1, 0, k};
      return match_node(cx, nd.kids[0], pos, &c, end);
    }
    case Node::Alt:
      for (int kid : nd.kids)
        if (match_node(cx, kid, pos, k, end)) return true;
      return false;
    case Node::Repeat: {
      const Node& body = nodes_[nd.kids[0]];
      if (body.kind == Node::Class) {
        // Single code point body: count the run once, then try the continuation from each length.
        size_t limit = cx.n - pos;
        if (nd.max >= 0) limit = std::min(limit, static_cast<size_t>(nd.max));
        size_t m = 0;
        while (m < limit && body.cls.matches(cx.s[pos + m])) ++m;
        const size_t mn = static_cast<size_t>(nd.min);
        if (m < mn) return false;
        if (nd.possessive) return resume(cx, k, pos + m, end);
        if (nd.greedy) {
          for (size_t i = m + 1; i-- > mn;)
            if (resume(cx, k, pos + i, end)) return true;
          return false;
        }
        for (size_t i = mn; i <= m; ++i)
          if (resume(cx, k, pos + i, end)) return true;
        return false;
      }
      const size_t no_iter = std::numeric_limits<size_t>::max();
      if (nd.possessive) {
        size_t e;
        if (!repeat_step(cx, n, 0, no_iter, pos, nullptr, &e)) return false;
        return resume(cx, k, e, end);
      }
      return repeat_step(cx, n, 0, no_iter, pos, k, end);
    }
    case Node::LookAhead: {
      size_t e;
      const bool m = match_node(cx, nd.kids[0], pos, nullptr, &e);
      return m != nd.negated && resume(cx, k, pos, end);
    }
    case Node::Atomic: {
      size_t e;
      return match_node(cx, nd.kids[0], pos, nullptr, &e) && resume(cx, k, e, end);
    }
    case Node::Begin:
      return pos == 0 && resume(cx, k, pos, end);
    case Node::End:
      return pos == cx.n && resume(cx, k, pos, end);
    case Node::EndBeforeNewline:
      return (pos == cx.n || (pos + 1 == cx.n && cx.s[pos] == '\n')) && resume(cx, k, pos, end);
    case Node::LineBegin:
      return (pos == 0 || cx.s[pos - 1] == '\n') && resume(cx, k, pos, end);
    case Node::LineEnd:
      return (pos == cx.n || cx.s[pos] == '\n') && resume(cx, k, pos, end);
    case Node::WordBoundary:
    case Node::NotWordBoundary: {
      const bool before = pos > 0 && is_word_char(cx.s[pos - 1]);
      const bool after = pos < cx.n && is_word_char(cx.s[pos]);
      return ((before != after) == (nd.kind == Node::WordBoundary)) && resume(cx, k, pos, end);
    }
  }
  return false;
}

bool UnicodeRegex::search(const std::u32string& text, size_t from, size_t* begin, size_t* end) const {
  const Ctx cx{text.data(), text.size()};
  for (size_t s = from; s <= text.size(); ++s) {
    if (match_node(cx, root_, s, nullptr, end)) {
      *begin = s;
      return true;
    }
  }
  return false;
}

bool UnicodeRegex::full_match(const std::u32string& text) const {
  const Ctx cx{text.data(), text.size()};
  size_t e;
  return match_node(cx, full_root_, 0, nullptr, &e);
}

std::vector<std::pair<size_t, size_t>> UnicodeRegex::find_all(const std::u32string& text) const {
  std::vector<std::pair<size_t, size_t>> out;
  size_t pos = 0, b, e;
  while (pos <= text.size() && search(text, pos, &b, &e)) {
    if (e == b) {  // empty match: nothing to keep, move on by one code point
      pos = b + 1;
      continue;
    }
    out.emplace_back(b, e);
    pos = e;
  }
  return out;
}

std::vector<std::pair<size_t, size_t>> UnicodeRegex::find_all_utf8(const std::string& text) const {
  const CodePoints cp = decode_utf8(text, "text");
  auto ranges = find_all(cp.cps);
  for (auto& r : ranges) r = {cp.offsets[r.first], cp.offsets[r.second]};
  return ranges;
}

}  // namespace ditgen::text
