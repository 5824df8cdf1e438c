#pragma once
// Logging with a rank prefix: "[rank 3/8] ...". Rank 0 prints progress and tables; every rank prints
// errors.
#include <fmt/format.h>

#include <string>

namespace ditgen::log {

void set_rank(int rank, int world);
int rank();
int world();
void set_verbose(bool verbose);
bool verbose();

// "[rank r/w]" (empty for a single process).
std::string prefix();

void info_line(const std::string& msg);   // rank 0 only, stdout
void debug_line(const std::string& msg);  // rank 0 only, with --verbose
void warn_line(const std::string& msg);   // every rank, stderr
void error_line(const std::string& msg);  // every rank, stderr

template <typename... A>
void info(fmt::format_string<A...> f, A&&... a) { info_line(fmt::format(f, std::forward<A>(a)...)); }
template <typename... A>
void debug(fmt::format_string<A...> f, A&&... a) {
  if (verbose()) debug_line(fmt::format(f, std::forward<A>(a)...));
}
template <typename... A>
void warn(fmt::format_string<A...> f, A&&... a) { warn_line(fmt::format(f, std::forward<A>(a)...)); }
template <typename... A>
void error(fmt::format_string<A...> f, A&&... a) { error_line(fmt::format(f, std::forward<A>(a)...)); }

}  // namespace ditgen::log
