#pragma once
// Text read from files (tensor names, keys, shard names) goes through `printable` before it is quoted
// in a message: control characters, invalid UTF-8 and bidirectional overrides come out as escapes
// (`\x1b`, `\u202e`), so a hostile file cannot drive or garble the terminal that shows the error.
#include <cstdint>
#include <cstdio>
#include <string>

namespace ditgen::io {

inline std::string printable(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  auto escape = [&out](const char* f, uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, f, static_cast<unsigned>(v));
    out += buf;
  };
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  for (size_t i = 0; i < n;) {
    const uint32_t c = p[i];
    if (c < 0x80) {
      if (c == '\n')
        out += "\\n";
      else if (c == '\t')
        out += "\\t";
      else if (c == '\r')
        out += "\\r";
      else if (c < 0x20 || c == 0x7f)
        escape("\\x%02x", c);
      else
        out += static_cast<char>(c);
      ++i;
      continue;
    }
    // One UTF-8 sequence; an ill-formed one (stray continuation, overlong, surrogate, > U+10FFFF, cut
    // short) is escaped byte by byte.
    const size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    uint32_t cp = c & (len == 2 ? 0x1fu : len == 3 ? 0x0fu : 0x07u);
    bool ok = len > 0 && c < 0xf5 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      ok = (p[i + k] & 0xc0) == 0x80;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    ok = ok && cp >= kMin[len] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    if (!ok) {
      escape("\\x%02x", c);
      ++i;
      continue;
    }
    // C1 controls, line separators and bidirectional controls reorder, hide or break the line.
    const bool hidden = cp <= 0x9f || cp == 0x061c || cp == 0x200e || cp == 0x200f ||
                        (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
    if (hidden)
      escape("\\u%04x", cp);
    else
      out.append(s, i, len);
    i += len;
  }
  return out;
}

}  // namespace ditgen::io
