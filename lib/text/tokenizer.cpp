#include "lib/text/tokenizer.h"

#include <utf8proc.h>
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string_view>
#include <unordered_map>

#include "lib/io/json.h"
#include "lib/runtime/error.h"
#include "lib/text/bpe.h"
#include "lib/text/qwen2_tokenizer.h"
#include "lib/text/tokenizer_pipeline.h"
#include "lib/text/utf8.h"

namespace ditgen::text {

namespace {

struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// A piece of input between added tokens, or one added token.
struct Segment {
  int64_t id = -1;  // >= 0: an added token
  std::string text;
  bool at_start = false;
};

// Finds added tokens in text: leftmost match first, the longest one at that position.
class AddedTokenMatcher {
 public:
  // `contents[i]` is what to look for (the token's content, normalized for normalized tokens).
  void build(const std::vector<const AddedToken*>& toks, const std::vector<std::string>& contents) {
    toks_ = toks;
    contents_ = contents;
    for (size_t i = 0; i < toks_.size(); ++i) {
      const std::string& c = contents_[i];
      if (c.empty()) continue;
      by_content_.emplace(std::string_view(c), i);  // the first token with a content wins
      auto& lens = lengths_[static_cast<unsigned char>(c[0])];
      if (std::find(lens.begin(), lens.end(), c.size()) == lens.end()) lens.push_back(c.size());
    }
    for (auto& lens : lengths_) std::sort(lens.rbegin(), lens.rend());
  }
  bool empty() const { return by_content_.empty(); }

  void split(const std::string& s, bool at_start, std::vector<Segment>& out) const {
    if (empty()) {
      if (!s.empty()) out.push_back(Segment{-1, s, at_start});
      return;
    }
    size_t prev = 0;  // end of the last match
    size_t i = 0;
    while (i < s.size()) {
      size_t tok_b, tok_e;
      const AddedToken* t = match_at(s, i, &tok_b, &tok_e);
      if (!t) {
        ++i;
        continue;
      }
      size_t b = tok_b, e = tok_e;
      if (t->lstrip)
        while (b > prev && is_space_before(s, b, &b)) {
        }
      if (t->rstrip)
        while (e < s.size() && is_space_at(s, e, &e)) {
        }
      if (b > prev) out.push_back(Segment{-1, s.substr(prev, b - prev), at_start && prev == 0});
      out.push_back(Segment{t->id, {}, false});
      prev = i = e;
    }
    if (prev < s.size()) out.push_back(Segment{-1, s.substr(prev), at_start && prev == 0});
  }

 private:
  // Longest token starting at byte i (that respects single_word), or nullptr.
  const AddedToken* match_at(const std::string& s, size_t i, size_t* b, size_t* e) const {
    for (size_t len : lengths_[static_cast<unsigned char>(s[i])]) {
      if (i + len > s.size()) continue;
      auto it = by_content_.find(std::string_view(s.data() + i, len));
      if (it == by_content_.end()) continue;
      const AddedToken* t = toks_[it->second];
      if (t->single_word && (word_before(s, i) || word_at(s, i + len))) continue;
      *b = i;
      *e = i + len;
      return t;
    }
    return nullptr;
  }
  static char32_t cp_at(const std::string& s, size_t i, size_t* next) {
    const size_t n = std::min(utf8_len(static_cast<unsigned char>(s[i])), s.size() - i);
    *next = i + n;
    return decode_utf8(s.substr(i, n)).cps[0];
  }
  static size_t prev_start(const std::string& s, size_t i) {
    size_t p = i - 1;
    while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
    return p;
  }
  static bool is_space_at(const std::string& s, size_t i, size_t* next) {
    size_t n;
    if (!is_unicode_space(cp_at(s, i, &n))) return false;
    *next = n;
    return true;
  }
  static bool is_space_before(const std::string& s, size_t i, size_t* start) {
    const size_t p = prev_start(s, i);
    size_t n;
    if (!is_unicode_space(cp_at(s, p, &n))) return false;
    *start = p;
    return true;
  }
  static bool is_word(char32_t c) {
    // Rust's char::is_alphanumeric or '_' (what single_word checks around the match).
    const int cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
    return c == '_' || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
           (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
  }
  static bool word_before(const std::string& s, size_t i) {
    if (i == 0) return false;
    size_t n;
    return is_word(cp_at(s, prev_start(s, i), &n));
  }
  static bool word_at(const std::string& s, size_t i) {
    if (i >= s.size()) return false;
    size_t n;
    return is_word(cp_at(s, i, &n));
  }

  std::vector<const AddedToken*> toks_;
  std::vector<std::string> contents_;
  std::unordered_map<std::string_view, size_t> by_content_;
  std::vector<size_t> lengths_[256];  // distinct content lengths by first byte, longest first
};

class HfTokenizer : public Tokenizer {
 public:
  HfTokenizer(const nlohmann::json& j, const std::string& where, const BpeTables* tables) {
    DITGEN_CHECK(j.is_object(), "{}: tokenizer.json is not a JSON object", where);
    auto mit = j.find("model");
    DITGEN_CHECK(mit != j.end() && mit->is_object(), "{}: tokenizer.json has no \"model\" object", where);
    model_ = std::make_unique<BpeModel>(*mit, where, tables);

    auto at = j.find("added_tokens");
    if (at != j.end() && !at->is_null()) {
      DITGEN_CHECK(at->is_array(), "{}: \"added_tokens\" is not a list", where);
      added_.reserve(at->size());
      for (size_t i = 0; i < at->size(); ++i) {
        const auto& e = (*at)[i];
        const std::string ctx = fmt::format("{}: added_tokens[{}]", where, i);
        AddedToken t;
        t.content = io::json_require<std::string>(e, "content", ctx);
        t.id = io::json_require<int64_t>(e, "id", ctx);
        DITGEN_CHECK(t.id >= 0, "{}: negative id {}", ctx, t.id);
        t.special = io::json_get<bool>(e, "special", false, ctx);
        t.lstrip = io::json_get<bool>(e, "lstrip", false, ctx);
        t.rstrip = io::json_get<bool>(e, "rstrip", false, ctx);
        t.single_word = io::json_get<bool>(e, "single_word", false, ctx);
        t.normalized = io::json_get<bool>(e, "normalized", !t.special, ctx);
        DITGEN_CHECK(is_valid_utf8(t.content), "{}: content is not valid UTF-8", ctx);
        added_.push_back(std::move(t));
      }
    }
    for (const auto& t : added_) {
      added_by_id_.emplace(t.id, &t);
      added_by_content_.emplace(t.content, t.id);
      max_id_ = std::max(max_id_, t.id);
    }
    max_id_ = std::max(max_id_, model_->max_id());

    auto get = [&](const char* key) -> const nlohmann::json& {
      static const nlohmann::json null_json;
      auto it = j.find(key);
      return it == j.end() ? null_json : *it;
    };
    normalizer_ = make_normalizer(get("normalizer"), where);
    pre_tokenizer_ = make_pre_tokenizer(get("pre_tokenizer"), where);
    post_processor_ = make_post_processor(
        get("post_processor"), where, [this](const std::string& tok, const std::string& ctx) -> int64_t {
          auto id = token_to_id(tok);
          DITGEN_CHECK(id.has_value(), "{}: token '{}' is not in the vocab", ctx, tok);
          return *id;
        });
    decoder_ = make_decoder(get("decoder"), where);

    // Tokens with normalized=false are found in the raw text; the others in normalized text
    // (their content normalized the same way).
    std::vector<const AddedToken*> raw, norm;
    std::vector<std::string> raw_c, norm_c;
    for (const auto& t : added_) {
      if (t.normalized && normalizer_) {
        norm.push_back(&t);
        norm_c.push_back(normalizer_->normalize(t.content));
      } else {
        raw.push_back(&t);
        raw_c.push_back(t.content);
      }
    }
    raw_matcher_.build(raw, raw_c);
    norm_matcher_.build(norm, norm_c);
  }

  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const override {
    size_t bad;
    DITGEN_CHECK(is_valid_utf8(text, &bad), "tokenizer: input text is not valid UTF-8 (byte {} of {})", bad,
                 text.size());
    std::vector<int64_t> ids;
    std::vector<Segment> segs, sub;
    raw_matcher_.split(text, true, segs);
    std::vector<Piece> pieces;
    for (auto& seg : segs) {
      if (seg.id >= 0) {
        ids.push_back(seg.id);
        continue;
      }
      std::string normalized = normalizer_ ? normalizer_->normalize(seg.text) : std::move(seg.text);
      sub.clear();
      norm_matcher_.split(normalized, seg.at_start, sub);
      for (auto& s : sub) {
        if (s.id >= 0) {
          ids.push_back(s.id);
          continue;
        }
        pieces.clear();
        pieces.push_back(Piece{std::move(s.text), s.at_start});
        if (pre_tokenizer_) pre_tokenizer_->split(pieces);
        for (const auto& p : pieces) model_->tokenize(p.text, ids);
      }
    }
    if (add_special_tokens && post_processor_) post_processor_->process(ids);
    return ids;
  }

  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int64_t id : ids) {
      auto it = added_by_id_.find(id);
      if (it != added_by_id_.end()) {
        if (skip_special_tokens && it->second->special) continue;
        tokens.push_back(it->second->content);
      } else if (const std::string* t = model_->id_to_token(id)) {
        tokens.push_back(*t);
      }  // unknown ids are dropped, as the reference does
    }
    std::string out;
    if (!decoder_) {
      for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
      return out;
    }
    decoder_->decode_chain(tokens);
    for (const auto& t : tokens) out += t;
    return out;
  }

  std::optional<int64_t> token_to_id(const std::string& token) const override {
    auto it = added_by_content_.find(token);
    if (it != added_by_content_.end()) return it->second;
    return model_->token_to_id(token);
  }

  std::optional<std::string> id_to_token(int64_t id) const override {
    auto it = added_by_id_.find(id);
    if (it != added_by_id_.end()) return it->second->content;
    if (const std::string* t = model_->id_to_token(id)) return *t;
    return std::nullopt;
  }

  int64_t vocab_size() const override { return max_id_ + 1; }

 private:
  std::unique_ptr<BpeModel> model_;
  std::vector<AddedToken> added_;  // never resized after construction: the maps point into it
  std::unordered_map<int64_t, const AddedToken*> added_by_id_;
  std::unordered_map<std::string, int64_t> added_by_content_;
  int64_t max_id_ = -1;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<PostProcessor> post_processor_;
  std::unique_ptr<Decoder> decoder_;
  AddedTokenMatcher raw_matcher_, norm_matcher_;
};

// SAX handler that builds the DOM of a tokenizer.json except model.vocab and model.merges, which
// go straight into BpeTables: a DOM of 500k two-element arrays costs seconds to build and free.
class TokenizerSax {
 public:
  using json = nlohmann::json;
  TokenizerSax(json& root, BpeTables& tables) : root_(root), t_(tables) {}

  bool null() { return scalar(nullptr); }
  bool boolean(bool v) { return scalar(v); }
  bool number_integer(json::number_integer_t v) {
    if (mode_ == Mode::Vocab) return vocab_id(v);
    return scalar(v);
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (mode_ == Mode::Vocab) return vocab_id(static_cast<int64_t>(std::min<uint64_t>(v, INT64_MAX)));
    return scalar(v);
  }
  bool number_float(json::number_float_t v, const json::string_t&) { return scalar(v); }
  bool binary(json::binary_t& v) { return scalar(json::binary(v)); }
  bool string(json::string_t& v) {
    if (mode_ == Mode::Merges) {
      const size_t sp = v.find(' ');
      if (sp == std::string::npos || v.find(' ', sp + 1) != std::string::npos)
        return bad(fmt::format("model.merges[{}] '{}' is not two tokens separated by one space",
                               t_.merges.size(), v));
      t_.merges.emplace_back(v.substr(0, sp), v.substr(sp + 1));
      return true;
    }
    if (mode_ == Mode::Vocab) return bad(unexpected());
    if (mode_ == Mode::MergePair) {
      if (pair_.size() == 2) return bad(unexpected());
      pair_.push_back(std::move(v));
      return true;
    }
    return scalar(std::move(v));
  }
  bool start_object(std::size_t) {
    if (mode_ != Mode::Dom) return bad(unexpected());
    if (pending_ == Pending::Vocab) {
      mode_ = Mode::Vocab;
      t_.has_vocab = true;
      pending_ = Pending::None;
      return true;
    }
    open(json::object());
    return true;
  }
  bool key(json::string_t& k) {
    if (mode_ == Mode::Vocab) {
      vocab_key_ = std::move(k);
      return true;
    }
    key_ = std::move(k);
    pending_ = Pending::None;
    if (stack_.size() == 2 && in_model_) {
      if (key_ == "vocab") pending_ = Pending::Vocab;
      if (key_ == "merges") pending_ = Pending::Merges;
    }
    return true;
  }
  bool end_object() {
    if (mode_ == Mode::Vocab) {
      mode_ = Mode::Dom;
      return true;
    }
    if (stack_.size() == 2) in_model_ = false;
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t) {
    if (mode_ == Mode::Merges) {
      mode_ = Mode::MergePair;
      pair_.clear();
      return true;
    }
    if (mode_ != Mode::Dom) return bad(unexpected());
    if (pending_ == Pending::Merges) {
      mode_ = Mode::Merges;
      t_.has_merges = true;
      pending_ = Pending::None;
      return true;
    }
    open(json::array());
    return true;
  }
  bool end_array() {
    if (mode_ == Mode::MergePair) {
      if (pair_.size() != 2) return bad(unexpected());
      t_.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      mode_ = Mode::Merges;
      return true;
    }
    if (mode_ == Mode::Merges) {
      mode_ = Mode::Dom;
      return true;
    }
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    if (t_.error.empty()) t_.error = std::string("not valid JSON: ") + ex.what();
    return false;
  }

 private:
  enum class Mode { Dom, Vocab, Merges, MergePair };
  enum class Pending { None, Vocab, Merges };

  bool bad(const std::string& msg) {
    if (t_.error.empty()) t_.error = msg;
    return false;
  }
  // For a value of the wrong kind inside model.vocab / model.merges.
  std::string unexpected() const {
    return mode_ == Mode::Vocab
               ? fmt::format("model.vocab['{}'] is not an integer id", vocab_key_)
               : fmt::format("model.merges[{}] is neither \"a b\" nor [\"a\", \"b\"]", t_.merges.size());
  }
  bool vocab_id(int64_t id) {
    t_.vocab.emplace_back(std::move(vocab_key_), id);
    return true;
  }
  bool scalar(json v) {
    if (mode_ != Mode::Dom) return bad(unexpected());
    pending_ = Pending::None;
    insert(std::move(v));
    return true;
  }
  json* insert(json v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    json& slot = top[key_];
    slot = std::move(v);
    return &slot;
  }
  void open(json v) {
    const bool is_model = stack_.size() == 1 && key_ == "model" && v.is_object();
    stack_.push_back(insert(std::move(v)));
    if (is_model) in_model_ = true;
  }

  json& root_;
  BpeTables& t_;
  std::vector<json*> stack_;  // open containers
  std::string key_, vocab_key_;
  std::vector<std::string> pair_;
  Mode mode_ = Mode::Dom;
  Pending pending_ = Pending::None;
  bool in_model_ = false;
};

std::string read_maybe_gzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // zlib reads plain files through unchanged
  DITGEN_CHECK(f != nullptr, "cannot open tokenizer file '{}'", path);
  std::string out;
  char buf[1 << 16];
  while (true) {
    const int n = gzread(f, buf, sizeof(buf));
    if (n < 0) {
      int err = 0;
      const std::string msg = gzerror(f, &err);
      gzclose(f);
      fail("cannot read tokenizer file '{}': {}", path, msg);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  gzclose(f);
  return out;
}

}  // namespace

std::shared_ptr<Tokenizer> Tokenizer::from_file(const std::string& path) {
  std::string file = path;
  nlohmann::json j;
  BpeTables tables;
  if (io::dir_exists(path)) {
    file = io::join_path(path, "tokenizer.json");
    if (!io::file_exists(file)) file += ".gz";
    if (!io::file_exists(file)) {
      // A slow-tokenizer folder (vocab.json + merges.txt), as Qwen/Qwen-Image may ship.
      j = qwen2_tokenizer_json_from_folder(path, &tables);
      return std::make_shared<HfTokenizer>(j, "tokenizer folder '" + path + "'", &tables);
    }
  }
  DITGEN_CHECK(io::file_exists(file), "tokenizer file '{}' not found", file);
  {
    const std::string text = read_maybe_gzip(file);
    TokenizerSax sax(j, tables);
    const bool ok = nlohmann::json::sax_parse(text, &sax);
    DITGEN_CHECK(ok && tables.error.empty(), "tokenizer file '{}': {}", file,
                 tables.error.empty() ? "parse failed" : tables.error);
  }
  return std::make_shared<HfTokenizer>(j, "'" + file + "'", &tables);
}

std::shared_ptr<Tokenizer> Tokenizer::from_json(const nlohmann::json& j, const std::string& where) {
  return std::make_shared<HfTokenizer>(j, where, nullptr);
}

}  // namespace ditgen::text
