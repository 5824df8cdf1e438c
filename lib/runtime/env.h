#pragma once
// Whole-number environment switches (the A/B measurement knobs, docs/benchmarks.md): read once where they
// are used; a malformed value ends the run naming the variable.
#include <cstdint>
#include <cstdlib>

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

}  // namespace ditgen::runtime
