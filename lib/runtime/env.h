#pragma once
// Whole-number and on/off environment switches (the A/B measurement knobs, docs/benchmarks.md): read once where they
// are used; a malformed value ends the run naming the variable.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "lib/runtime/error.h"

namespace ditgen::runtime {

// `name`'s value, `fallback` when unset; a value that is not a whole number >= `min` fails with
// "NAME='value': expected <expected>".
inline int64_t env_whole_number(const char* name, int64_t fallback, int64_t min, const char* expected) {
  const char* v = std::getenv(name);
  if (v == nullptr) return fallback;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  DITGEN_CHECK(*v != '\0' && *end == '\0' && x >= min, "{}='{}': expected {}", name, v, expected);
  return static_cast<int64_t>(x);
}

// `name`'s value as a switch, `fallback` when unset: "1" on, "0" off; any other value fails with
// "NAME='value': expected <expected>".
inline bool env_switch(const char* name, bool fallback, const char* expected) {
  const char* v = std::getenv(name);
  if (v == nullptr) return fallback;
  DITGEN_CHECK(std::strcmp(v, "0") == 0 || std::strcmp(v, "1") == 0, "{}='{}': expected {}", name, v, expected);
  return v[0] == '1';
}

}  // namespace ditgen::runtime
