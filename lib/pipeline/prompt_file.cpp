#include "lib/pipeline/prompt_file.h"

#include <set>

#include <nlohmann/json.hpp>

#include "lib/io/json.h"
#include "lib/io/printable.h"
#include "lib/pipeline/settings_check.h"
#include "lib/runtime/error.h"

namespace ditgen::pipeline {

namespace {

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t b = 0;
  while (b < text.size()) {
    size_t e = text.find('\n', b);
    if (e == std::string::npos) e = text.size();
    size_t end = e;
    if (end > b && text[end - 1] == '\r') --end;
    lines.push_back(text.substr(b, end - b));
    b = e + 1;
  }
  return lines;
}

bool blank(const std::string& s) { return s.find_first_not_of(" \t") == std::string::npos; }

// The byte offset of the first ill-formed UTF-8 sequence (overlong, surrogate, > U+10FFFF, cut short,
// stray continuation), or npos when `s` is well-formed.
size_t first_bad_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    const size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (len == 0 || c >= 0xf5 || i + len > n) return i;
    uint32_t cp = c & (len == 2 ? 0x1fu : len == 3 ? 0x0fu : 0x07u);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += len;
  }
  return std::string::npos;
}

}  // namespace

std::string read_prompt_file_bytes(const std::string& path) {
  return io::read_text_file(path, kMaxPromptFileBytes, "--prompt-file '" + io::printable(path) + "'");
}

std::vector<PromptItem> parse_prompt_file(const std::string& path, const std::string& bytes) {
  const std::vector<std::string> lines = split_lines(bytes);
  bool json_lines = false;
  for (const auto& l : lines)
    if (!blank(l)) {
      json_lines = l[l.find_first_not_of(" \t")] == '{';
      break;
    }
  static const std::set<std::string> known = {"prompt", "negative_prompt", "seed",  "height",  "width",
                                              "steps",  "output",          "image", "strength"};
  std::vector<PromptItem> items;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (blank(lines[i])) continue;
    PromptItem item;
    item.line = static_cast<int>(i + 1);
    const std::string where = fmt::format("--prompt-file {} line {}", io::printable(path), item.line);
    // The tokenizers take UTF-8; a line that is not would be refused later without its file and line.
    const size_t bad = first_bad_utf8(lines[i]);
    DITGEN_CHECK(bad == std::string::npos,
                 "{}: not UTF-8 text (byte 0x{:02x} at column {}); save the file as UTF-8", where,
                 static_cast<unsigned>(static_cast<unsigned char>(lines[i][bad])), bad + 1);
    if (!json_lines) {
      item.prompt = lines[i];
      items.push_back(item);
      continue;
    }
    DITGEN_CHECK(lines[i][lines[i].find_first_not_of(" \t")] == '{',
                 "{}: not a JSON object; a JSON Lines file has one object per line", where);
    const nlohmann::json j = io::parse_json(lines[i], where);
    DITGEN_CHECK(j.is_object(), "{}: expected a JSON object, got {}; a JSON Lines file has one object per line",
                 where, j.type_name());
    for (const auto& kv : j.items()) {
      std::string names;
      for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
      DITGEN_CHECK(known.count(kv.key()), "{}: unknown key \"{}\" (known: {})", where, io::printable(kv.key()), names);
    }
    if (j.contains("prompt")) item.prompt = checked_text(j, "prompt", where);
    if (j.contains("negative_prompt")) item.negative_prompt = checked_text(j, "negative_prompt", where);
    if (j.contains("seed")) item.seed = checked_unsigned(j, "seed", where);
    if (j.contains("height")) item.height = checked_integer(j, "height", where);
    if (j.contains("width")) item.width = checked_integer(j, "width", where);
    if (j.contains("steps")) item.steps = checked_integer(j, "steps", where);
    if (j.contains("output")) {
      DITGEN_CHECK(j["output"].is_string(), "{}: \"output\" must be a string, got {}", where,
                   io::json_excerpt(j["output"]));
      item.output = j["output"].get<std::string>();
      DITGEN_CHECK(!item.output.empty(), "{}: \"output\" is empty; leave it out to use --output", where);
      DITGEN_CHECK(item.output.find('\0') == std::string::npos, "{}: \"output\" holds a NUL character", where);
    }
    if (j.contains("image")) {  // one path, or a list of them
      const nlohmann::json& v = j["image"];
      const nlohmann::json paths = v.is_array() ? v : nlohmann::json::array({v});
      DITGEN_CHECK(!paths.empty(), "{}: \"image\" is an empty list; leave it out to use --image", where);
      for (const auto& p : paths) {
        DITGEN_CHECK(p.is_string() && !p.get<std::string>().empty() &&
                         p.get<std::string>().find('\0') == std::string::npos,
                     "{}: \"image\" must be a file path or a list of them, got {}", where,
                     io::json_excerpt(v));
        item.images.push_back(p.get<std::string>());
      }
    }
    if (j.contains("strength")) item.strength = checked_number(j, "strength", where);
    items.push_back(item);
  }
  DITGEN_CHECK(!items.empty(), "--prompt-file '{}' has no prompts (every line is blank)", io::printable(path));
  return items;
}

std::vector<PromptItem> read_prompt_file(const std::string& path) {
  return parse_prompt_file(path, read_prompt_file_bytes(path));
}

std::string prompt_file_digest_of(const std::string& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return fmt::format("{:016x}", h);
}

}  // namespace ditgen::pipeline
