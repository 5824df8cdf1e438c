#pragma once
// The BPE model of a tokenizer.json (`"model": {"type": "BPE", ...}`): vocab, ranked merges,
// byte fallback, unknown-token handling. See docs/reference/tokenizers.md.
#include <cstdint>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ditgen::text {

// model.vocab and model.merges taken out of the JSON text while it is parsed (the DOM of a 500k
// merges file costs seconds to build and free); see Tokenizer::from_file.
struct BpeTables {
  std::vector<std::pair<std::string, int64_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  bool has_vocab = false, has_merges = false;
  std::string error;  // first malformed entry, reported when the model is built
};

class BpeModel {
 public:
  // `where` names the file in errors. With `tables`, vocab and merges come from there (their
  // entries in `model` are ignored).
  BpeModel(const nlohmann::json& model, const std::string& where, const BpeTables* tables = nullptr);
  BpeModel(const BpeModel&) = delete;  // vocab_ holds views into this object's strings
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one pre-tokenized word.
  void tokenize(std::string_view word, std::vector<int64_t>& out) const;

  std::optional<int64_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int64_t id) const;  // nullptr if the id is not in the vocab
  int64_t max_id() const { return static_cast<int64_t>(id_to_token_.size()) - 1; }
  size_t num_merges() const { return num_merges_; }

 private:
  // Open-addressing map (id_a, id_b) -> (rank, merged id): a few hundred thousand entries are
  // built at load time, so it must be cheap to fill.
  struct MergeTable {
    struct Slot {
      uint64_t key = ~uint64_t{0};
      int32_t rank = 0, id = 0;
    };
    std::vector<Slot> slots;
    uint64_t mask = 0;
    void reserve(size_t n);
    void insert(uint64_t key, int32_t rank, int32_t id);  // a later insert of a key overwrites it
    const Slot* find(uint64_t key) const;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  // Open-addressing map token -> id; the strings live in id_to_token_ / extra_tokens_.
  struct VocabTable {
    struct Slot {
      uint64_t hash = 0;
      const std::string* token = nullptr;
      int32_t id = -1;
    };
    std::vector<Slot> slots;
    uint64_t mask = 0;
    void reserve(size_t n);
    void insert(const std::string* token, int32_t id);  // keeps the first id of a token
    int32_t find(std::string_view token) const;         // -1 if absent
  };
  void add_merge(const std::string& a, const std::string& b, int32_t rank, const std::string& where);

  std::vector<std::string> id_to_token_;  // by id; empty string in holes
  std::vector<bool> has_id_;
  std::deque<std::string> extra_tokens_;  // tokens sharing an id with another
  VocabTable vocab_;
  MergeTable merges_;
  size_t num_merges_ = 0;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
  int32_t byte_ids_[256];        // id of "<0xXX>", or -1
};

}  // namespace ditgen::text
