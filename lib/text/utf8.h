#pragma once
// UTF-8 <-> code points, with the byte offset of every code point.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ditgen::text {

struct CodePoints {
  std::u32string cps;
  std::vector<size_t> offsets;  // byte offset of cps[i]; offsets[cps.size()] = byte length
};

// Throws ditgen::Error naming `what` and the byte position on invalid UTF-8.
CodePoints decode_utf8(const std::string& s, const char* what = "text");
bool is_valid_utf8(const std::string& s, size_t* bad_pos = nullptr);
void append_utf8(std::string& out, char32_t cp);
std::string to_utf8(const std::u32string& cps);
std::string to_utf8(char32_t cp);
// Like Rust's String::from_utf8_lossy: each maximal invalid subsequence becomes one U+FFFD.
std::string utf8_lossy(const std::string& bytes);
// Unicode White_Space (Rust's char::is_whitespace, what the tokenizers library strips).
bool is_unicode_space(char32_t c);
// Length of the UTF-8 sequence that starts with byte `b` (1 for stray continuation bytes).
inline size_t utf8_len(unsigned char b) {
  return b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 1;
}

}  // namespace ditgen::text
