#include "lib/text/tokenizer_pipeline.h"

#include <utf8proc.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <iterator>

#include "lib/runtime/error.h"
#include "lib/text/regex.h"
#include "lib/text/utf8.h"

namespace ditgen::text {

using nlohmann::json;

namespace {

std::string type_of(const json& j, const std::string& where, const char* stage) {
  DITGEN_CHECK(j.is_object(), "{}: {} is not an object", where, stage);
  auto it = j.find("type");
  DITGEN_CHECK(it != j.end() && it->is_string(), "{}: {} has no \"type\"", where, stage);
  return it->get<std::string>();
}

// A "pattern" object: {"String": "..."} or {"Regex": "..."}.
struct Pattern {
  std::string literal;
  std::shared_ptr<Regex> regex;

  Pattern(const json& j, const std::string& where) {
    DITGEN_CHECK(j.is_object() && j.size() == 1, "{}: pattern {} is not {{\"String\"|\"Regex\": ...}}", where,
                 j.dump());
    if (j.contains("String")) {
      literal = j["String"].get<std::string>();
      DITGEN_CHECK(!literal.empty(), "{}: empty String pattern", where);
    } else if (j.contains("Regex")) {
      try {
        regex = std::make_shared<Regex>(j["Regex"].get<std::string>());
      } catch (const Error& e) {
        fail("{}: {}", where, e.what());
      }
    } else {
      fail("{}: pattern {} is neither String nor Regex", where, j.dump());
    }
  }

  // Non-overlapping matches as byte ranges, empty ones included (a Replace inserts its content there, a
  // Split makes a boundary), as the tokenizers library's Pattern::find_matches gives them; it reports no
  // match at all in an empty text.
  std::vector<std::pair<size_t, size_t>> find_all(const std::string& s) const {
    if (s.empty()) return {};
    if (regex) return regex->find_all(s);
    std::vector<std::pair<size_t, size_t>> out;
    for (size_t p = s.find(literal); p != std::string::npos; p = s.find(literal, p + literal.size()))
      out.emplace_back(p, p + literal.size());
    return out;
  }

  std::string replace_all(const std::string& s, const std::string& content) const {
    std::string out;
    size_t prev = 0;
    for (const auto& [b, e] : find_all(s)) {
      out.append(s, prev, b - prev);
      out += content;
      prev = e;
    }
    out.append(s, prev, std::string::npos);
    return out;
  }
};

bool get_bool(const json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? fallback : it->get<bool>();
}

// ---------------------------------------------------------------------------------------------
// Normalizers

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(int options) : options_(options) {}
  std::string normalize(const std::string& s) const override {
    if (s.empty()) return s;
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                     static_cast<utf8proc_ssize_t>(s.size()), &out, static_cast<utf8proc_option_t>(options_));
    if (n < 0) fail("tokenizer: Unicode normalisation failed: {}", utf8proc_errmsg(n));
    std::string r(reinterpret_cast<char*>(out), static_cast<size_t>(n));
    std::free(out);
    return r;
  }

 private:
  int options_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(const json& j, const std::string& where)
      : pattern_(j.at("pattern"), where), content_(j.at("content").get<std::string>()) {}
  std::string normalize(const std::string& s) const override { return pattern_.replace_all(s, content_); }

 private:
  Pattern pattern_;
  std::string content_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : prepend_(std::move(p)) {}
  std::string normalize(const std::string& s) const override { return s.empty() ? s : prepend_ + s; }

 private:
  std::string prepend_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  std::string normalize(const std::string& s) const override {
    std::string out;
    for (char32_t c : decode_utf8(s).cps)
      append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    return out;
  }
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string normalize(const std::string& s) const override {
    const CodePoints cp = decode_utf8(s);
    size_t b = 0, e = cp.cps.size();
    if (left_)
      while (b < e && is_unicode_space(cp.cps[b])) ++b;
    if (right_)
      while (e > b && is_unicode_space(cp.cps[e - 1])) --e;
    return s.substr(cp.offsets[b], cp.offsets[e] - cp.offsets[b]);
  }

 private:
  bool left_, right_;
};

class StripAccentsNormalizer : public Normalizer {
 public:
  std::string normalize(const std::string& s) const override {
    std::string out;
    for (char32_t c : decode_utf8(s).cps)
      if (utf8proc_category(static_cast<utf8proc_int32_t>(c)) != UTF8PROC_CATEGORY_MN) append_utf8(out, c);
    return out;
  }
};

class ByteLevelNormalizer : public Normalizer {
 public:
  std::string normalize(const std::string& s) const override { return byte_level_encode(s); }
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> v) : parts_(std::move(v)) {}
  std::string normalize(const std::string& s) const override {
    std::string r = s;
    for (const auto& p : parts_) r = p->normalize(r);
    return r;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const json& j, const std::string& where) {
  const std::string b = j.get<std::string>();
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  fail(
      "{}: Split behavior '{}' is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, "
      "Contiguous",
      where, b);
}

// Splits `piece` at the byte ranges `matches` (sorted, non-overlapping) as the reference's
// split-delimiter behaviours do, and appends the non-empty parts to `out`.
void split_piece(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches, Behavior behavior,
                 bool invert, std::vector<Piece>& out) {
  const std::string& s = piece.text;
  struct Span {
    size_t b, e;
    bool is_match;
  };
  std::vector<Span> spans;
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (b > prev) spans.push_back({prev, b, false});
    spans.push_back({b, e, true});
    prev = e;
  }
  if (prev < s.size()) spans.push_back({prev, s.size(), false});
  if (invert)
    for (auto& sp : spans) sp.is_match = !sp.is_match;

  std::vector<std::pair<size_t, size_t>> parts;
  switch (behavior) {
    case Behavior::Removed:
      for (const auto& sp : spans)
        if (!sp.is_match) parts.emplace_back(sp.b, sp.e);
      break;
    case Behavior::Isolated:
      for (const auto& sp : spans) parts.emplace_back(sp.b, sp.e);
      break;
    case Behavior::MergedWithPrevious: {
      bool prev_match = false;
      for (const auto& sp : spans) {
        if (sp.is_match && !prev_match && !parts.empty())
          parts.back().second = sp.e;
        else
          parts.emplace_back(sp.b, sp.e);
        prev_match = sp.is_match;
      }
      break;
    }
    case Behavior::MergedWithNext: {
      bool prev_match = false;  // walking backwards: "the span after this one was a match"
      for (size_t i = spans.size(); i-- > 0;) {
        const auto& sp = spans[i];
        if (sp.is_match && !prev_match && !parts.empty())
          parts.back().first = sp.b;
        else
          parts.emplace_back(sp.b, sp.e);
        prev_match = sp.is_match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
    }
    case Behavior::Contiguous: {
      int prev_kind = -1;
      for (const auto& sp : spans) {
        if (static_cast<int>(sp.is_match) == prev_kind && !parts.empty())
          parts.back().second = sp.e;
        else
          parts.emplace_back(sp.b, sp.e);
        prev_kind = sp.is_match;
      }
      break;
    }
  }
  for (const auto& [b, e] : parts)
    if (e > b) out.push_back(Piece{s.substr(b, e - b), piece.at_start && b == 0});
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern p, Behavior b, bool invert)
      : pattern_(std::move(p)), behavior_(b), invert_(invert) {}
  void split(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (const auto& p : pieces) split_piece(p, pattern_.find_all(p.text), behavior_, invert_, out);
    pieces.swap(out);
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_ = std::make_unique<Regex>(kGpt2Pattern);
  }
  void split(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    for (auto p : pieces) {
      if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      if (regex_)
        split_piece(p, regex_->find_all(p.text), Behavior::Isolated, false, out);
      else
        out.push_back(std::move(p));
    }
    for (auto& p : out) p.text = byte_level_encode(p.text);
    pieces.swap(out);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

enum class PrependScheme { Always, First, Never };

PrependScheme parse_prepend_scheme(const json& j, const std::string& where) {
  auto it = j.find("prepend_scheme");
  if (it != j.end() && !it->is_null()) {
    const std::string s = it->get<std::string>();
    if (s == "always") return PrependScheme::Always;
    if (s == "first") return PrependScheme::First;
    if (s == "never") return PrependScheme::Never;
    fail("{}: Metaspace prepend_scheme '{}' is not one of always, first, never", where, s);
  }
  return get_bool(j, "add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
}

std::string metaspace_replacement(const json& j, const std::string& where) {
  std::string r = j.value("replacement", std::string("\xE2\x96\x81"));  // U+2581
  DITGEN_CHECK(decode_utf8(r).cps.size() == 1, "{}: Metaspace replacement '{}' is not one character", where,
               r);
  return r;
}

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(const json& j, const std::string& where)
      : rep_(metaspace_replacement(j, where)),
        scheme_(parse_prepend_scheme(j, where)),
        split_(get_bool(j, "split", true)) {}
  void split(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    const Pattern rep(json{{"String", rep_}}, "Metaspace");
    for (auto p : pieces) {
      std::string t;
      for (char ch : p.text) {
        if (ch == ' ')
          t += rep_;
        else
          t += ch;
      }
      const bool starts = t.compare(0, rep_.size(), rep_) == 0;
      if (!starts && (scheme_ == PrependScheme::Always || (scheme_ == PrependScheme::First && p.at_start)))
        t.insert(0, rep_);
      p.text = std::move(t);
      if (split_)
        split_piece(p, rep.find_all(p.text), Behavior::MergedWithNext, false, out);
      else
        out.push_back(std::move(p));
    }
    pieces.swap(out);
  }

 private:
  std::string rep_;
  PrependScheme scheme_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> v) : parts_(std::move(v)) {}
  void split(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts_) p->split(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

std::unique_ptr<PreTokenizer> regex_split(const std::string& pattern, Behavior b, bool invert) {
  return std::make_unique<SplitPreTokenizer>(Pattern(json{{"Regex", pattern}}, "pre_tokenizer"), b, invert);
}

// ---------------------------------------------------------------------------------------------
// Post-processors

class TemplatePostProcessor : public PostProcessor {
 public:
  // Each item: the special ids to insert, or (empty + is_sequence) the input ids.
  struct Item {
    bool is_sequence = false;
    std::vector<int64_t> ids;
  };
  explicit TemplatePostProcessor(std::vector<Item> items) : items_(std::move(items)) {}
  void process(std::vector<int64_t>& ids) const override {
    std::vector<int64_t> out;
    out.reserve(ids.size() + 4);
    for (const auto& it : items_) {
      if (it.is_sequence)
        out.insert(out.end(), ids.begin(), ids.end());
      else
        out.insert(out.end(), it.ids.begin(), it.ids.end());
    }
    ids.swap(out);
  }

 private:
  std::vector<Item> items_;
};

class NoopPostProcessor : public PostProcessor {
 public:
  void process(std::vector<int64_t>&) const override {}
};

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> v) : parts_(std::move(v)) {}
  void process(std::vector<int64_t>& ids) const override {
    for (const auto& p : parts_) p->process(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

std::unique_ptr<PostProcessor> make_template(const json& j, const std::string& where,
                                             const TokenLookup& lookup) {
  const std::string ctx = where + ": post_processor TemplateProcessing";
  const json& specials = j.contains("special_tokens") ? j["special_tokens"] : json::object();
  auto special_ids = [&](const std::string& name) {
    std::vector<int64_t> ids;
    if (specials.contains(name)) {
      const json& sp = specials[name];
      DITGEN_CHECK(sp.contains("ids") && sp["ids"].is_array(), "{}: special_tokens['{}'] has no ids", ctx,
                   name);
      for (const auto& v : sp["ids"]) ids.push_back(v.get<int64_t>());
    } else {
      ids.push_back(lookup(name, ctx));
    }
    return ids;
  };
  std::vector<TemplatePostProcessor::Item> items;
  auto it = j.find("single");
  DITGEN_CHECK(it != j.end(), "{}: missing \"single\"", ctx);
  if (it->is_string()) {
    // Older textual form: "<s> $A </s>" (":N" suffixes give type ids, which do not matter here).
    std::string s = it->get<std::string>();
    size_t pos = 0;
    while (pos < s.size()) {
      const size_t e = std::min(s.find(' ', pos), s.size());
      std::string piece = s.substr(pos, e - pos);
      pos = e + 1;
      if (piece.empty()) continue;
      if (piece[0] == '$') {
        const std::string seq =
            piece.substr(1, piece.find(':') == std::string::npos ? std::string::npos : piece.find(':') - 1);
        DITGEN_CHECK(seq.empty() || seq == "A" || seq == "0", "{}: sequence '{}' in a single template", ctx,
                     piece);
        items.push_back({true, {}});
      } else {
        const size_t colon = piece.rfind(':');
        items.push_back({false, special_ids(colon == std::string::npos ? piece : piece.substr(0, colon))});
      }
    }
  } else {
    DITGEN_CHECK(it->is_array(), "{}: \"single\" is neither a list nor a string", ctx);
    for (const auto& piece : *it) {
      if (piece.contains("Sequence")) {
        const std::string id = piece["Sequence"].value("id", std::string("A"));
        DITGEN_CHECK(id == "A", "{}: sequence '{}' in a single template", ctx, id);
        items.push_back({true, {}});
      } else if (piece.contains("SpecialToken")) {
        items.push_back({false, special_ids(piece["SpecialToken"].at("id").get<std::string>())});
      } else {
        fail("{}: template item {} is neither Sequence nor SpecialToken", ctx, piece.dump());
      }
    }
  }
  return std::make_unique<TemplatePostProcessor>(std::move(items));
}

// ---------------------------------------------------------------------------------------------
// Decoders

class ByteLevelDecoder : public Decoder {
 public:
  ByteLevelDecoder() {
    std::fill(std::begin(inverse_), std::end(inverse_), -1);
    const char32_t* t = byte_to_unicode_table();
    for (int b = 0; b < 256; ++b) inverse_[t[b]] = b;
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes, tok_bytes;
    for (const auto& t : tokens) {
      tok_bytes.clear();
      bool ok = is_valid_utf8(t);
      if (ok) {
        for (char32_t c : decode_utf8(t).cps) {
          if (c >= 512 || inverse_[c] < 0) {
            ok = false;
            break;
          }
          tok_bytes += static_cast<char>(inverse_[c]);
        }
      }
      bytes += ok ? tok_bytes : t;  // a token outside the byte alphabet is kept as it is
    }
    tokens.assign(1, utf8_lossy(bytes));
  }

 private:
  int inverse_[512];  // stand-in code point -> byte, -1 elsewhere (stand-ins are all < U+0200)
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(const json& j, const std::string& where)
      : pattern_(j.at("pattern"), where), content_(j.at("content").get<std::string>()) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = pattern_.replace_all(t, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    auto flush = [&] {
      if (pending.empty()) return;
      if (is_valid_utf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (auto& t : tokens) {
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
          std::isxdigit(static_cast<unsigned char>(t[3])) &&
          std::isxdigit(static_cast<unsigned char>(t[4]))) {
        pending += static_cast<char>(std::strtol(t.substr(3, 2).c_str(), nullptr, 16));
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    tokens.swap(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(const json& j, const std::string& where) {
    const CodePoints c = decode_utf8(j.at("content").get<std::string>());
    DITGEN_CHECK(c.cps.size() == 1, "{}: Strip decoder content is not one character", where);
    content_ = c.cps[0];
    start_ = j.value("start", 0);
    stop_ = j.value("stop", 0);
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      const CodePoints c = decode_utf8(t);
      size_t b = 0, e = c.cps.size();
      for (size_t i = 0; i < static_cast<size_t>(start_) && b < e && c.cps[b] == content_; ++i) ++b;
      for (size_t i = 0; i < static_cast<size_t>(stop_) && e > b && c.cps[e - 1] == content_; ++i) --e;
      t = t.substr(c.offsets[b], c.offsets[e] - c.offsets[b]);
    }
  }

 private:
  char32_t content_;
  int start_ = 0, stop_ = 0;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(const json& j, const std::string& where)
      : rep_(j, where), scheme_(parse_prepend_scheme(j, where)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = rep_.replace_all(tokens[i], " ");
      if (i == 0 && scheme_ != PrependScheme::Never && !tokens[i].empty() && tokens[i][0] == ' ')
        tokens[i].erase(0, 1);
    }
  }

 private:
  struct Rep : Pattern {
    Rep(const json& j, const std::string& where)
        : Pattern(json{{"String", metaspace_replacement(j, where)}}, where) {}
  } rep_;
  PrependScheme scheme_;
};

class BpeSuffixDecoder : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    const Pattern p(json{{"String", suffix_}}, "BPEDecoder");
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = p.replace_all(tokens[i], i + 1 == tokens.size() ? "" : " ");
  }

 private:
  std::string suffix_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> v) : parts_(std::move(v)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

const json& list_of(const json& j, const char* key, const std::string& where, const char* stage) {
  auto it = j.find(key);
  DITGEN_CHECK(it != j.end() && it->is_array(), "{}: {} Sequence has no \"{}\" list", where, stage, key);
  return *it;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

const char32_t* byte_to_unicode_table() {
  // Printable bytes stand for themselves; the others are mapped, in order, to U+0100 onwards.
  static const auto table = [] {
    std::vector<char32_t> t(256);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      t[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
    }
    return t;
  }();
  return table.data();
}

std::string byte_level_encode(const std::string& s) {
  static const auto utf8 = [] {
    std::vector<std::string> t(256);
    for (int b = 0; b < 256; ++b) t[b] = to_utf8(byte_to_unicode_table()[b]);
    return t;
  }();
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char b : s) out += utf8[b];
  return out;
}

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, where, "normalizer");
  try {
    if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (type == "NFD") return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
    if (type == "NFKC")
      return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
    if (type == "NFKD")
      return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
    if (type == "Replace") return std::make_unique<ReplaceNormalizer>(j, where + ": normalizer Replace");
    if (type == "Prepend") return std::make_unique<PrependNormalizer>(j.at("prepend").get<std::string>());
    if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
    if (type == "Strip")
      return std::make_unique<StripNormalizer>(get_bool(j, "strip_left", true),
                                               get_bool(j, "strip_right", true));
    if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
    if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
    if (type == "Sequence") {
      std::vector<std::unique_ptr<Normalizer>> parts;
      for (const auto& n : list_of(j, "normalizers", where, "normalizer")) {
        auto p = make_normalizer(n, where);
        if (p) parts.push_back(std::move(p));
      }
      return std::make_unique<SequenceNormalizer>(std::move(parts));
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed normalizer {} ({})", where, type, e.what());
  }
  fail(
      "{}: normalizer type '{}' is not supported (supported: NFC, NFD, NFKC, NFKD, Replace, Prepend, "
      "Lowercase, Strip, StripAccents, ByteLevel, Sequence)",
      where, type);
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, where, "pre_tokenizer");
  try {
    if (type == "Split") {
      const std::string ctx = where + ": pre_tokenizer Split";
      return std::make_unique<SplitPreTokenizer>(
          Pattern(j.at("pattern"), ctx), parse_behavior(j.at("behavior"), ctx), get_bool(j, "invert", false));
    }
    if (type == "ByteLevel")
      return std::make_unique<ByteLevelPreTokenizer>(get_bool(j, "add_prefix_space", true),
                                                     get_bool(j, "use_regex", true));
    if (type == "Metaspace")
      return std::make_unique<MetaspacePreTokenizer>(j, where + ": pre_tokenizer Metaspace");
    if (type == "Whitespace") return regex_split(R"(\w+|[^\w\s]+)", Behavior::Removed, true);
    if (type == "WhitespaceSplit") return regex_split(R"(\s+)", Behavior::Removed, false);
    if (type == "Digits")
      return get_bool(j, "individual_digits", false) ? regex_split("[0-9]", Behavior::Isolated, false)
                                                     : regex_split("[0-9]+", Behavior::Isolated, false);
    if (type == "Punctuation") {
      const Behavior b = j.contains("behavior") ? parse_behavior(j["behavior"], where) : Behavior::Isolated;
      return regex_split(R"([\p{P}!-/:-@\[-`{-~])", b, false);
    }
    if (type == "BertPreTokenizer") {
      std::vector<std::unique_ptr<PreTokenizer>> parts;
      parts.push_back(regex_split(R"(\s+)", Behavior::Removed, false));
      parts.push_back(regex_split(R"([\p{P}!-/:-@\[-`{-~])", Behavior::Isolated, false));
      return std::make_unique<SequencePreTokenizer>(std::move(parts));
    }
    if (type == "CharDelimiterSplit") {
      return std::make_unique<SplitPreTokenizer>(
          Pattern(json{{"String", j.at("delimiter").get<std::string>()}}, where), Behavior::Removed, false);
    }
    if (type == "Sequence") {
      std::vector<std::unique_ptr<PreTokenizer>> parts;
      for (const auto& n : list_of(j, "pretokenizers", where, "pre_tokenizer")) {
        auto p = make_pre_tokenizer(n, where);
        if (p) parts.push_back(std::move(p));
      }
      return std::make_unique<SequencePreTokenizer>(std::move(parts));
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed pre_tokenizer {} ({})", where, type, e.what());
  }
  fail(
      "{}: pre_tokenizer type '{}' is not supported (supported: Split, ByteLevel, Metaspace, Whitespace, "
      "WhitespaceSplit, Digits, Punctuation, BertPreTokenizer, CharDelimiterSplit, Sequence)",
      where, type);
}

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& where,
                                                   const TokenLookup& lookup) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, where, "post_processor");
  try {
    if (type == "ByteLevel") return std::make_unique<NoopPostProcessor>();  // offsets only
    if (type == "TemplateProcessing") return make_template(j, where, lookup);
    if (type == "BertProcessing" || type == "RobertaProcessing") {
      // {"cls": ["<s>", 0], "sep": ["</s>", 2]}: [cls] A [sep].
      std::vector<TemplatePostProcessor::Item> items;
      items.push_back({false, {j.at("cls").at(1).get<int64_t>()}});
      items.push_back({true, {}});
      items.push_back({false, {j.at("sep").at(1).get<int64_t>()}});
      return std::make_unique<TemplatePostProcessor>(std::move(items));
    }
    if (type == "Sequence") {
      std::vector<std::unique_ptr<PostProcessor>> parts;
      for (const auto& n : list_of(j, "processors", where, "post_processor")) {
        auto p = make_post_processor(n, where, lookup);
        if (p) parts.push_back(std::move(p));
      }
      return std::make_unique<SequencePostProcessor>(std::move(parts));
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed post_processor {} ({})", where, type, e.what());
  }
  fail(
      "{}: post_processor type '{}' is not supported (supported: ByteLevel, TemplateProcessing, "
      "BertProcessing, RobertaProcessing, Sequence)",
      where, type);
}

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, where, "decoder");
  try {
    if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
    if (type == "Replace") return std::make_unique<ReplaceDecoder>(j, where + ": decoder Replace");
    if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
    if (type == "Fuse") return std::make_unique<FuseDecoder>();
    if (type == "Strip") return std::make_unique<StripDecoder>(j, where + ": decoder Strip");
    if (type == "Metaspace") return std::make_unique<MetaspaceDecoder>(j, where + ": decoder Metaspace");
    if (type == "BPEDecoder")
      return std::make_unique<BpeSuffixDecoder>(j.value("suffix", std::string("</w>")));
    if (type == "Sequence") {
      std::vector<std::unique_ptr<Decoder>> parts;
      for (const auto& n : list_of(j, "decoders", where, "decoder")) {
        auto p = make_decoder(n, where);
        if (p) parts.push_back(std::move(p));
      }
      return std::make_unique<SequenceDecoder>(std::move(parts));
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed decoder {} ({})", where, type, e.what());
  }
  fail(
      "{}: decoder type '{}' is not supported (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, "
      "Metaspace, BPEDecoder, Sequence)",
      where, type);
}

}  // namespace ditgen::text
