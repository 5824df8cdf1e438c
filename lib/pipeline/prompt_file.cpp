#include "lib/pipeline/prompt_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "lib/io/printable.h"
#include "lib/runtime/error.h"

namespace ditgen::pipeline {

namespace {

std::string read_all(const std::string& path) {
  struct stat st {};
  DITGEN_CHECK(::stat(path.c_str(), &st) == 0, "--prompt-file '{}': {}", io::printable(path), std::strerror(errno));
  DITGEN_CHECK(S_ISREG(st.st_mode), "--prompt-file '{}' is not a regular file", io::printable(path));
  std::ifstream f(path, std::ios::binary);
  DITGEN_CHECK(f.good(), "--prompt-file '{}' cannot be read: {}", io::printable(path), std::strerror(errno));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::string cur;
  for (char c : text) {
    if (c == '\n') {
      if (!cur.empty() && cur.back() == '\r') cur.pop_back();
      lines.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) lines.push_back(cur.back() == '\r' ? cur.substr(0, cur.size() - 1) : cur);
  return lines;
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t") == std::string::npos; }

int64_t positive(const nlohmann::json& v, const std::string& where, const char* key, int64_t max) {
  DITGEN_CHECK(v.is_number_integer() && v.get<int64_t>() >= 1 && v.get<int64_t>() <= max,
               "{}: \"{}\" must be an integer from 1 to {}, got {}", where, key, max, v.dump());
  return v.get<int64_t>();
}

}  // namespace

std::vector<PromptItem> read_prompt_file(const std::string& path) {
  const std::vector<std::string> lines = split_lines(read_all(path));
  bool json_lines = false;
  for (const auto& l : lines)
    if (!blank(l)) {
      json_lines = l[l.find_first_not_of(" \t")] == '{';
      break;
    }
  std::vector<PromptItem> items;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (blank(lines[i])) continue;
    PromptItem item;
    item.line = static_cast<int>(i + 1);
    const std::string where = fmt::format("--prompt-file {} line {}", io::printable(path), item.line);
    if (!json_lines) {
      item.prompt = lines[i];
      items.push_back(item);
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(lines[i]);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not a JSON object ({}); a JSON Lines file has one object per line", where, e.what());
    }
    DITGEN_CHECK(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());
    static const std::set<std::string> known = {"prompt", "negative_prompt", "seed", "height", "width", "steps", "output"};
    for (const auto& kv : j.items()) {
      std::string names;
      for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
      DITGEN_CHECK(known.count(kv.key()), "{}: unknown key \"{}\" (known: {})", where, io::printable(kv.key()), names);
    }
    auto text = [&](const char* key) -> std::optional<std::string> {
      if (!j.contains(key)) return std::nullopt;
      DITGEN_CHECK(j[key].is_string(), "{}: \"{}\" must be a string, got {}", where, key, j[key].dump());
      return j[key].get<std::string>();
    };
    item.prompt = text("prompt");
    item.negative_prompt = text("negative_prompt");
    if (j.contains("seed")) {
      DITGEN_CHECK(j["seed"].is_number_unsigned(), "{}: \"seed\" must be a non-negative integer, got {}", where,
                   j["seed"].dump());
      item.seed = j["seed"].get<uint64_t>();
    }
    if (j.contains("height")) item.height = positive(j["height"], where, "height", 1 << 16);
    if (j.contains("width")) item.width = positive(j["width"], where, "width", 1 << 16);
    if (j.contains("steps")) item.steps = positive(j["steps"], where, "steps", 100000);
    if (auto o = text("output")) {
      DITGEN_CHECK(!o->empty(), "{}: \"output\" is empty; leave it out to use --output", where);
      item.output = *o;
    }
    items.push_back(item);
  }
  DITGEN_CHECK(!items.empty(), "--prompt-file '{}' has no prompts (every line is blank)", io::printable(path));
  return items;
}

std::string prompt_file_digest(const std::string& path) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : read_all(path)) h = (h ^ c) * 1099511628211ull;
  return fmt::format("{:016x}", h);
}

}  // namespace ditgen::pipeline
