#include "lib/text/utf8.h"

#include "lib/runtime/error.h"

namespace ditgen::text {

namespace {

// Decodes one code point at s[i]; returns 0 bytes consumed on malformed input (overlong forms,
// surrogates and values above U+10FFFF included, as Rust's str rejects them).
size_t decode_one(const std::string& s, size_t i, char32_t* cp) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  const size_t n = utf8_len(b0);
  if (n == 1 || i + n > s.size()) return 0;
  char32_t v = b0 & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    v = (v << 6) | (b & 0x3F);
  }
  static const char32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (v < min_for_len[n] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return n;
}

}  // namespace

bool is_valid_utf8(const std::string& s, size_t* bad_pos) {
  char32_t cp;
  for (size_t i = 0; i < s.size();) {
    const size_t n = decode_one(s, i, &cp);
    if (n == 0) {
      if (bad_pos) *bad_pos = i;
      return false;
    }
    i += n;
  }
  return true;
}

CodePoints decode_utf8(const std::string& s, const char* what) {
  CodePoints out;
  out.cps.reserve(s.size());
  out.offsets.reserve(s.size() + 1);
  for (size_t i = 0; i < s.size();) {
    char32_t cp;
    const size_t n = decode_one(s, i, &cp);
    DITGEN_CHECK(n > 0, "{} is not valid UTF-8 (byte {} of {})", what, i, s.size());
    out.cps.push_back(cp);
    out.offsets.push_back(i);
    i += n;
  }
  out.offsets.push_back(s.size());
  return out;
}

std::string utf8_lossy(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    char32_t cp;
    const size_t n = decode_one(s, i, &cp);
    if (n > 0) {
      out.append(s, i, n);
      i += n;
      continue;
    }
    // Skip the longest prefix of a valid sequence (the "maximal subpart"), at least one byte.
    const auto b0 = static_cast<unsigned char>(s[i]);
    const size_t want = utf8_len(b0);
    size_t k = 1;
    if (want > 1) {
      unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
      if (b0 == 0xE0)
        lo = 0xA0;
      else if (b0 == 0xED)
        hi = 0x9F;
      else if (b0 == 0xF0)
        lo = 0x90;
      else if (b0 == 0xF4)
        hi = 0x8F;
      else if (b0 > 0xF4 || b0 < 0xC2)
        lo = 1, hi = 0;  // a lead byte that is never valid
      while (k < want && i + k < s.size()) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if (k == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) break;
        ++k;
      }
    }
    out += "\xEF\xBF\xBD";
    i += k;
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string to_utf8(const std::u32string& cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) append_utf8(out, c);
  return out;
}

std::string to_utf8(char32_t cp) {
  std::string out;
  append_utf8(out, cp);
  return out;
}

bool is_unicode_space(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

}  // namespace ditgen::text
