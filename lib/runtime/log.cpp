#include "lib/runtime/log.h"

#include <cstdio>

namespace ditgen::log {
namespace {
int g_rank = 0;
int g_world = 1;
bool g_verbose = false;
}  // namespace

void set_rank(int r, int w) { g_rank = r; g_world = w; }
int rank() { return g_rank; }
int world() { return g_world; }
void set_verbose(bool v) { g_verbose = v; }
bool verbose() { return g_verbose; }

std::string prefix() { return g_world > 1 ? fmt::format("[rank {}/{}] ", g_rank, g_world) : ""; }

void info_line(const std::string& msg) {
  if (g_rank != 0) return;
  std::fprintf(stdout, "%s\n", msg.c_str());
  std::fflush(stdout);
}
void debug_line(const std::string& msg) {
  if (g_rank != 0) return;
  std::fprintf(stdout, "[debug] %s\n", msg.c_str());
  std::fflush(stdout);
}
void warn_line(const std::string& msg) {
  std::fprintf(stderr, "%swarning: %s\n", prefix().c_str(), msg.c_str());
  std::fflush(stderr);
}
void error_line(const std::string& msg) {
  std::fprintf(stderr, "%serror: %s\n", prefix().c_str(), msg.c_str());
  std::fflush(stderr);
}

}  // namespace ditgen::log
