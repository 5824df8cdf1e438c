#include "lib/text/regex.h"

#include <oniguruma.h>

#include <memory>
#include <mutex>

#include "lib/io/printable.h"
#include "lib/runtime/error.h"
#include "lib/text/utf8.h"

namespace ditgen::text {

namespace {

// Oniguruma's compiler touches process-wide state (its encoding and property tables); the tokenizers
// library's onig crate compiles under one lock too. Searching needs no lock.
std::mutex& compile_mutex() {
  static std::mutex m;
  return m;
}

std::string onig_message(int code, OnigErrorInfo* info) {
  OnigUChar buf[ONIG_MAX_ERROR_MESSAGE_LEN];
  const int n = info ? onig_error_code_to_str(buf, code, info) : onig_error_code_to_str(buf, code);
  return io::printable(std::string(reinterpret_cast<const char*>(buf), n > 0 ? static_cast<size_t>(n) : 0));
}

}  // namespace

Regex::Regex(const std::string& pattern) : pattern_(pattern) {
  const auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
  OnigErrorInfo info{};
  int r;
  {
    std::lock_guard<std::mutex> lock(compile_mutex());
    static const int init = [] {
      OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
      return onig_initialize(encodings, 1);
    }();
    if (init != ONIG_NORMAL)
      fail("regex '{}': Oniguruma failed to start: {}", io::printable(pattern), onig_message(init, nullptr));
    // The onig crate compiles with OnigDefaultSyntax, which is ONIG_SYNTAX_ONIGURUMA in the Oniguruma it
    // bundles (6.9.8, as Debian 12's libonig5); named here so that no caller of onig_set_default_syntax
    // can change it.
    r = onig_new(&re_, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8, ONIG_SYNTAX_ONIGURUMA,
                 &info);
  }
  if (r != ONIG_NORMAL) {
    re_ = nullptr;
    fail("regex '{}': {}", io::printable(pattern), onig_message(r, &info));
  }
}

Regex::~Regex() {
  if (re_) onig_free(re_);
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(const std::string& text) const {
  size_t bad = 0;
  DITGEN_CHECK(is_valid_utf8(text, &bad), "regex '{}': the text is not valid UTF-8 (byte {} of {})",
               io::printable(pattern_), bad, text.size());
  std::unique_ptr<OnigRegion, void (*)(OnigRegion*)> region(onig_region_new(),
                                                            [](OnigRegion* g) { onig_region_free(g, 1); });
  DITGEN_CHECK(region != nullptr, "regex '{}': out of memory", io::printable(pattern_));
  const auto* beg = reinterpret_cast<const OnigUChar*>(text.data());
  const auto* end = beg + text.size();
  std::vector<std::pair<size_t, size_t>> out;
  // onig's FindMatches: after an empty match the search moves on one code point; the first empty
  // match that follows a non-empty one is dropped (whatever its position).
  size_t last_end = 0;
  bool skip_next_empty = false;
  while (last_end <= text.size()) {
    onig_region_clear(region.get());
    const int r = onig_search(re_, beg, end, beg + last_end, end, region.get(), ONIG_OPTION_NONE);
    if (r == ONIG_MISMATCH) break;
    if (r < 0)
      fail("regex '{}': {} (searching {} bytes of text)", io::printable(pattern_), onig_message(r, nullptr),
           text.size());
    const auto b = static_cast<size_t>(region->beg[0]);
    const auto e = static_cast<size_t>(region->end[0]);
    last_end = e;
    if (e == b) {
      last_end += e < text.size() ? utf8_len(static_cast<unsigned char>(text[e])) : 1;
      if (skip_next_empty) {
        skip_next_empty = false;
        continue;
      }
    } else {
      skip_next_empty = true;
    }
    out.emplace_back(b, e);
  }
  return out;
}

}  // namespace ditgen::text
