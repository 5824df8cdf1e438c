#pragma once
// One exception type for every user-facing failure. The message names the file, key, flag or number
// to fix; the CLI prints it with the rank prefix and exits non-zero on every rank.
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace ditgen {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace ditgen

// DITGEN_CHECK(cond, "format {}", args...): throws ditgen::Error with the formatted message.
#define DITGEN_CHECK(cond, ...)          \
  do {                                   \
    if (!(cond)) ::ditgen::fail(__VA_ARGS__); \
  } while (0)
