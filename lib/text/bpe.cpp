#include "lib/text/bpe.h"

#include <deque>
#include <queue>

#include "lib/runtime/error.h"
#include "lib/text/utf8.h"

namespace ditgen::text {

void BpeModel::MergeTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  slots.assign(cap, Slot{});
  mask = cap - 1;
}

static inline uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

void BpeModel::MergeTable::insert(uint64_t key, int32_t rank, int32_t id) {
  for (uint64_t i = mix64(key) & mask;; i = (i + 1) & mask) {
    Slot& s = slots[i];
    if (s.key == key || s.key == ~uint64_t{0}) {
      s = Slot{key, rank, id};
      return;
    }
  }
}

const BpeModel::MergeTable::Slot* BpeModel::MergeTable::find(uint64_t key) const {
  if (slots.empty()) return nullptr;
  for (uint64_t i = mix64(key) & mask;; i = (i + 1) & mask) {
    const Slot& s = slots[i];
    if (s.key == key) return &s;
    if (s.key == ~uint64_t{0}) return nullptr;
  }
}

static inline uint64_t hash_bytes(std::string_view s) { return std::hash<std::string_view>()(s); }

void BpeModel::VocabTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  slots.assign(cap, Slot{});
  mask = cap - 1;
}

void BpeModel::VocabTable::insert(const std::string* token, int32_t id) {
  const uint64_t h = hash_bytes(*token);
  for (uint64_t i = mix64(h) & mask;; i = (i + 1) & mask) {
    Slot& s = slots[i];
    if (!s.token) {
      s = Slot{h, token, id};
      return;
    }
    if (s.hash == h && *s.token == *token) return;
  }
}

int32_t BpeModel::VocabTable::find(std::string_view token) const {
  if (slots.empty()) return -1;
  const uint64_t h = hash_bytes(token);
  for (uint64_t i = mix64(h) & mask;; i = (i + 1) & mask) {
    const Slot& s = slots[i];
    if (!s.token) return -1;
    if (s.hash == h && *s.token == token) return s.id;
  }
}

namespace {

std::string opt_string(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? std::string() : it->get<std::string>();
}

bool opt_bool(const nlohmann::json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? fallback : it->get<bool>();
}

}  // namespace

void BpeModel::add_merge(const std::string& a, const std::string& b, int32_t rank, const std::string& where) {
  const int32_t ia = vocab_.find(a), ib = vocab_.find(b);
  DITGEN_CHECK(ia >= 0, "{}: model.merges[{}]: token '{}' is not in the vocab", where, rank, a);
  DITGEN_CHECK(ib >= 0, "{}: model.merges[{}]: token '{}' is not in the vocab", where, rank, b);
  // The merged token drops the right part's continuation prefix (as many bytes as it has).
  std::string merged = a;
  merged.append(b, std::min(prefix_.size(), b.size()), std::string::npos);
  const int32_t im = vocab_.find(merged);
  DITGEN_CHECK(im >= 0, "{}: model.merges[{}]: merged token '{}' is not in the vocab", where, rank, merged);
  merges_.insert(pair_key(ia, ib), rank, im);
}

BpeModel::BpeModel(const nlohmann::json& m, const std::string& where, const BpeTables* tables) {
  const std::string type = m.value("type", std::string("BPE"));
  DITGEN_CHECK(type == "BPE", "{}: model type '{}' is not supported (only BPE)", where, type);
  if (tables) DITGEN_CHECK(tables->error.empty(), "{}: {}", where, tables->error);
  try {
    // Vocab: (token, id) pairs from the tables or the JSON object.
    std::vector<std::pair<std::string, int64_t>> from_json;
    const std::vector<std::pair<std::string, int64_t>>* vocab = &from_json;
    if (tables && tables->has_vocab) {
      vocab = &tables->vocab;
    } else {
      auto vit = m.find("vocab");
      DITGEN_CHECK(vit != m.end() && vit->is_object(), "{}: model.vocab is missing or not an object", where);
      from_json.reserve(vit->size());
      for (const auto& kv : vit->items()) {
        DITGEN_CHECK(kv.value().is_number_integer(), "{}: model.vocab['{}'] is not an integer", where,
                     kv.key());
        from_json.emplace_back(kv.key(), kv.value().get<int64_t>());
      }
    }
    int64_t max_id = -1;
    for (const auto& [tok, id] : *vocab) {
      DITGEN_CHECK(id >= 0 && id < (int64_t{1} << 31) - 1, "{}: model.vocab['{}'] has id {} (out of range)",
                   where, tok, id);
      max_id = std::max(max_id, id);
    }
    id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
    has_id_.assign(static_cast<size_t>(max_id + 1), false);
    vocab_.reserve(vocab->size());
    std::vector<std::pair<const std::string*, int32_t>> shared_id;  // a second token with a known id
    for (const auto& [tok, id64] : *vocab) {
      const auto id = static_cast<int32_t>(id64);
      if (has_id_[id]) {
        shared_id.emplace_back(&tok, id);
        continue;
      }
      id_to_token_[id] = tok;
      has_id_[id] = true;
    }
    for (size_t id = 0; id < id_to_token_.size(); ++id)
      if (has_id_[id]) vocab_.insert(&id_to_token_[id], static_cast<int32_t>(id));
    for (const auto& [tok, id] : shared_id) {
      extra_tokens_.push_back(*tok);  // deque: the pointer stays valid
      vocab_.insert(&extra_tokens_.back(), id);
    }

    prefix_ = opt_string(m, "continuing_subword_prefix");
    suffix_ = opt_string(m, "end_of_word_suffix");
    fuse_unk_ = opt_bool(m, "fuse_unk", false);
    byte_fallback_ = opt_bool(m, "byte_fallback", false);
    ignore_merges_ = opt_bool(m, "ignore_merges", false);
    auto dit = m.find("dropout");
    DITGEN_CHECK(dit == m.end() || dit->is_null() || dit->get<double>() == 0.0,
                 "{}: model.dropout is set; BPE dropout is random and not supported at inference", where);
    const std::string unk = opt_string(m, "unk_token");
    if (!unk.empty()) {
      const int32_t id = vocab_.find(unk);
      DITGEN_CHECK(id >= 0, "{}: model.unk_token '{}' is not in the vocab", where, unk);
      unk_id_ = id;
    }
    for (int b = 0; b < 256; ++b) byte_ids_[b] = vocab_.find(fmt::format("<0x{:02X}>", b));

    // Merges: ["a", "b"] pairs or "a b" strings; a later duplicate of a pair overrides its rank.
    if (tables && tables->has_merges) {
      merges_.reserve(tables->merges.size());
      int32_t rank = 0;
      for (const auto& [a, b] : tables->merges) add_merge(a, b, rank++, where);
      num_merges_ = static_cast<size_t>(rank);
    } else if (auto mit = m.find("merges"); mit != m.end() && !mit->is_null()) {
      DITGEN_CHECK(mit->is_array(), "{}: model.merges is not an array", where);
      merges_.reserve(mit->size());
      int32_t rank = 0;
      std::string a, b;
      for (const auto& e : *mit) {
        if (e.is_string()) {
          const std::string& s = e.get_ref<const std::string&>();
          const size_t sp = s.find(' ');
          DITGEN_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                       "{}: model.merges[{}] '{}' is not two tokens separated by one space", where, rank, s);
          a.assign(s, 0, sp);
          b.assign(s, sp + 1, std::string::npos);
        } else {
          DITGEN_CHECK(e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string(),
                       "{}: model.merges[{}] is neither \"a b\" nor [\"a\", \"b\"]", where, rank);
          a = e[0].get_ref<const std::string&>();
          b = e[1].get_ref<const std::string&>();
        }
        add_merge(a, b, rank++, where);
      }
      num_merges_ = static_cast<size_t>(rank);
    }
  } catch (const nlohmann::json::exception& e) {
    fail("{}: malformed BPE model ({})", where, e.what());
  }
}

std::optional<int64_t> BpeModel::token_to_id(std::string_view token) const {
  const int32_t id = vocab_.find(token);
  if (id < 0) return std::nullopt;
  return id;
}

const std::string* BpeModel::id_to_token(int64_t id) const {
  if (id < 0 || id >= static_cast<int64_t>(id_to_token_.size()) || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::tokenize(std::string_view word, std::vector<int64_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const int32_t id = vocab_.find(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }

  // Initial symbols: one per character (with prefix/suffix), else its bytes, else <unk>.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  auto push = [&](int32_t id) {
    const auto n = static_cast<int32_t>(syms.size());
    syms.push_back(Symbol{id, n - 1, n + 1, true});
  };
  bool pending_unk = false;
  std::string piece;
  for (size_t i = 0; i < word.size();) {
    size_t len = utf8_len(static_cast<unsigned char>(word[i]));
    len = std::min(len, word.size() - i);
    const bool first = i == 0, last = i + len == word.size();
    piece.clear();
    if (!first) piece += prefix_;
    piece.append(word.data() + i, len);
    if (last) piece += suffix_;
    i += len;
    const int32_t id = vocab_.find(piece);
    if (id >= 0) {
      if (pending_unk) push(*unk_id_), pending_unk = false;
      push(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : piece) all = all && byte_ids_[b] >= 0;
      if (all) {
        if (pending_unk) push(*unk_id_), pending_unk = false;
        for (unsigned char b : piece) push(byte_ids_[b]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !fuse_unk_) push(*unk_id_);
      pending_unk = true;
    }
    // Without an unk token the character is dropped, as the reference does.
  }
  if (pending_unk) push(*unk_id_);
  if (syms.empty()) return;
  syms.back().next = -1;

  // Merge the lowest-ranked pair first (leftmost on ties) until no known pair is left; stale
  // queue entries are skipped when their pair no longer yields the same token.
  struct Cand {
    int32_t rank, pos, new_id;
    bool operator<(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand> queue;
  for (size_t p = 0; p + 1 < syms.size(); ++p)
    if (const auto* m = merges_.find(pair_key(syms[p].id, syms[p + 1].id)))
      queue.push(Cand{m->rank, static_cast<int32_t>(p), m->id});
  while (!queue.empty()) {
    const Cand top = queue.top();
    queue.pop();
    Symbol& left = syms[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = syms[left.next];
    const auto* m = merges_.find(pair_key(left.id, right.id));
    if (!m || m->id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) syms[left.next].prev = top.pos;
    if (left.prev >= 0)
      if (const auto* mp = merges_.find(pair_key(syms[left.prev].id, left.id)))
        queue.push(Cand{mp->rank, left.prev, mp->id});
    if (left.next >= 0)
      if (const auto* mn = merges_.find(pair_key(left.id, syms[left.next].id)))
        queue.push(Cand{mn->rank, top.pos, mn->id});
  }
  for (const auto& s : syms)
    if (s.alive) out.push_back(s.id);
}

}  // namespace ditgen::text
