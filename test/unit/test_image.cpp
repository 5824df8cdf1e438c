// PNG output: the generation settings ride along in a text chunk that image tools read, and the file
// stays a valid PNG with correct chunk checksums.
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>

#include "lib/io/image.h"

namespace {

uint32_t be32(const std::string& s, size_t at) {
  return (uint32_t(uint8_t(s[at])) << 24) | (uint32_t(uint8_t(s[at + 1])) << 16) | (uint32_t(uint8_t(s[at + 2])) << 8) |
         uint32_t(uint8_t(s[at + 3]));
}

// Walks the chunks; returns "type:payload" of the text chunks and fails on a bad CRC.
std::vector<std::string> text_chunks(const std::string& png) {
  REQUIRE(png.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
  std::vector<std::string> out;
  for (size_t at = 8; at + 12 <= png.size();) {
    const uint32_t n = be32(png, at);
    const std::string type = png.substr(at + 4, 4);
    REQUIRE(at + 12 + n <= png.size());
    const uint32_t crc = uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(png.data() + at + 4), n + 4));
    CHECK(crc == be32(png, at + 8 + n));
    if (type == "tEXt" || type == "iTXt") out.push_back(type + ":" + png.substr(at + 8, n));
    at += 12 + n;
  }
  return out;
}

}  // namespace

TEST_CASE("png_bytes: the parameters text chunk (tEXt for ASCII, iTXt for UTF-8) after IHDR", "[image]") {
  const at::Tensor img = at::rand({3, 5, 7});
  CHECK(text_chunks(ditgen::io::png_bytes(img)).empty());

  const std::string ascii = "a red fox\nSteps: 4, Seed: 1, Size: 7x5, Model: flux2-tiny";
  const std::string png = ditgen::io::png_bytes(img, ascii);
  CHECK(png.compare(37, 4, "tEXt") == 0);  // right after IHDR
  CHECK(text_chunks(png) == std::vector<std::string>{"tEXt:parameters" + std::string(1, '\0') + ascii});
  // The pixels are unchanged: the same bytes without the chunk.
  const std::string plain = ditgen::io::png_bytes(img);
  CHECK(png.size() == plain.size() + 12 + 11 + ascii.size());

  const std::string utf8 = "un renard roux \xe2\x80\x94 \xe7\x8b\x90\xe7\x8b\xb8";
  const auto chunks = text_chunks(ditgen::io::png_bytes(img, utf8));
  REQUIRE(chunks.size() == 1);
  CHECK(chunks[0] == "iTXt:parameters" + std::string(5, '\0') + utf8);
}
