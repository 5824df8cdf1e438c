#include "lib/text/qwen2_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <vector>

#include "lib/io/json.h"
#include "lib/runtime/error.h"
#include "lib/text/bpe.h"

namespace ditgen::text {

const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

nlohmann::json qwen2_tokenizer_json(nlohmann::json vocab, nlohmann::json merges,
                                    nlohmann::json added_tokens) {
  using nlohmann::json;
  const json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  return json{
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", std::move(added_tokens)},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", kQwen2Pattern}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          byte_level}}}},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", std::move(vocab)},
        {"merges", std::move(merges)}}},
  };
}

namespace {

// "#version: 0.2" on the first line is a comment; blank lines are skipped; every other line is "a b".
std::vector<std::pair<std::string, std::string>> read_merges(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DITGEN_CHECK(in.good(), "cannot open '{}'", path);
  std::vector<std::pair<std::string, std::string>> out;
  std::string line;
  for (size_t n = 1; std::getline(in, line); ++n) {
    const auto b = line.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) continue;
    line = line.substr(b, line.find_last_not_of(" \t\r\n") - b + 1);
    if (n == 1 && line.rfind("#version:", 0) == 0) continue;
    const size_t sp = line.find_first_of(" \t");
    const size_t second = sp == std::string::npos ? sp : line.find_first_not_of(" \t", sp);
    DITGEN_CHECK(second != std::string::npos && line.find_first_of(" \t", second) == std::string::npos,
                 "'{}' line {}: '{}' is not two tokens separated by a space", path, n, line);
    out.emplace_back(line.substr(0, sp), line.substr(second));
  }
  return out;
}

// A special-token entry of tokenizer_config.json / special_tokens_map.json: a string or {"content": ...}.
std::string token_content(const nlohmann::json& v, const std::string& where) {
  if (v.is_string()) return v.get<std::string>();
  DITGEN_CHECK(v.is_object() && v.contains("content") && v["content"].is_string(),
               "{}: special token {} is neither a string nor {{\"content\": ...}}", where, v.dump());
  return v["content"].get<std::string>();
}

// Contents of the special tokens a config names (bos/eos/unk/pad/... and additional_special_tokens).
void special_names(const nlohmann::json& j, const std::string& where, std::vector<std::string>& out) {
  for (const char* key :
       {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    auto it = j.find(key);
    if (it != j.end() && !it->is_null()) out.push_back(token_content(*it, where + ": " + key));
  }
  auto it = j.find("additional_special_tokens");
  if (it != j.end() && !it->is_null()) {
    DITGEN_CHECK(it->is_array(), "{}: additional_special_tokens is not a list", where);
    for (const auto& v : *it) out.push_back(token_content(v, where + ": additional_special_tokens"));
  }
}

}  // namespace

nlohmann::json qwen2_tokenizer_json_from_folder(const std::string& folder, BpeTables* tables) {
  using nlohmann::json;
  const std::string vocab_path = io::join_path(folder, "vocab.json");
  const std::string merges_path = io::join_path(folder, "merges.txt");
  const std::string config_path = io::join_path(folder, "tokenizer_config.json");
  std::string missing;
  for (const char* name : {"vocab.json", "merges.txt", "tokenizer_config.json"})
    if (!io::file_exists(io::join_path(folder, name)))
      missing += std::string(missing.empty() ? "" : ", ") + name;
  DITGEN_CHECK(
      missing.empty(),
      "tokenizer folder '{}' has no tokenizer.json(.gz), and no {} to build one from (a Qwen2Tokenizer "
      "folder needs vocab.json, merges.txt and tokenizer_config.json)",
      folder, missing);

  const json config = io::read_json_file(config_path);
  const std::string cls = io::json_get<std::string>(config, "tokenizer_class", "", "'" + config_path + "'");
  DITGEN_CHECK(
      cls == "Qwen2Tokenizer" || cls == "Qwen2TokenizerFast",
      "tokenizer folder '{}' has no tokenizer.json(.gz), and its tokenizer_config.json names tokenizer_class "
      "'{}': only Qwen2Tokenizer can be built from vocab.json + merges.txt",
      folder, cls);

  json vocab = io::read_json_file(vocab_path);
  DITGEN_CHECK(vocab.is_object(), "'{}' is not a JSON object of token -> id", vocab_path);
  int64_t next_id = 0;
  for (const auto& [tok, id] : vocab.items()) {
    DITGEN_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0,
                 "'{}': the id of '{}' is not an integer >= 0", vocab_path, tok);
    next_id = std::max(next_id, id.get<int64_t>() + 1);
  }
  auto merges = read_merges(merges_path);

  // Added tokens by id; content -> id for the look-ups below.
  std::map<int64_t, json> added;
  std::map<std::string, int64_t> added_ids;
  auto add = [&](int64_t id, json entry, const std::string& where) {
    const std::string content = entry["content"].get<std::string>();
    DITGEN_CHECK(!added.count(id), "{}: id {} is given to both '{}' and '{}'", where, id,
                 added.at(id)["content"].get<std::string>(), content);
    added_ids.emplace(content, id);
    added.emplace(id, std::move(entry));
    next_id = std::max(next_id, id + 1);
  };
  auto entry_of = [](int64_t id, const std::string& content, bool special) {
    return json{{"id", id},        {"content", content},     {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", !special}, {"special", special}};
  };

  auto atd = config.find("added_tokens_decoder");
  if (atd != config.end() && !atd->is_null()) {
    const std::string where = "'" + config_path + "': added_tokens_decoder";
    DITGEN_CHECK(atd->is_object(), "{} is not an object", where);
    for (const auto& [key, e] : atd->items()) {
      size_t used = 0;
      int64_t id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
      }
      DITGEN_CHECK(id >= 0 && used == key.size(), "{}: key '{}' is not a token id", where, key);
      const std::string ctx = where + "[" + key + "]";
      const bool special = io::json_get<bool>(e, "special", false, ctx);
      json entry = entry_of(id, io::json_require<std::string>(e, "content", ctx), special);
      for (const char* k : {"single_word", "lstrip", "rstrip", "normalized"})
        entry[k] = io::json_get<bool>(e, k, entry[k].get<bool>(), ctx);
      add(id, std::move(entry), where);
    }
  }

  std::vector<std::string> specials;
  special_names(config, "'" + config_path + "'", specials);
  const std::string map_path = io::join_path(folder, "special_tokens_map.json");
  if (io::file_exists(map_path)) special_names(io::read_json_file(map_path), "'" + map_path + "'", specials);
  const std::set<std::string> special_set(specials.begin(), specials.end());

  const std::string extra_path = io::join_path(folder, "added_tokens.json");
  if (io::file_exists(extra_path)) {
    const json extra = io::read_json_file(extra_path);
    DITGEN_CHECK(extra.is_object(), "'{}' is not a JSON object of token -> id", extra_path);
    std::vector<std::pair<int64_t, std::string>> by_id;
    for (const auto& [content, id] : extra.items()) {
      DITGEN_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0,
                   "'{}': the id of '{}' is not an integer >= 0", extra_path, content);
      if (!added_ids.count(content)) by_id.emplace_back(id.get<int64_t>(), content);
    }
    std::sort(by_id.begin(), by_id.end());
    for (const auto& [id, content] : by_id)
      add(id, entry_of(id, content, special_set.count(content) > 0), "'" + extra_path + "'");
  }
  // Named special tokens found nowhere else are appended, in the order the config names them.
  for (const auto& s : specials)
    if (!added_ids.count(s) && !vocab.contains(s)) add(next_id, entry_of(next_id, s, true), "special tokens");

  json added_tokens = json::array();
  for (auto& [id, e] : added) added_tokens.push_back(std::move(e));

  if (!tables) {
    json jmerges = json::array();
    for (auto& [a, b] : merges) jmerges.push_back({std::move(a), std::move(b)});
    return qwen2_tokenizer_json(std::move(vocab), std::move(jmerges), std::move(added_tokens));
  }
  tables->vocab.clear();
  tables->vocab.reserve(vocab.size());
  for (const auto& [tok, id] : vocab.items()) tables->vocab.emplace_back(tok, id.get<int64_t>());
  tables->merges = std::move(merges);
  tables->has_vocab = tables->has_merges = true;
  return qwen2_tokenizer_json(json::object(), json::array(), std::move(added_tokens));
}

}  // namespace ditgen::text
