#include "lib/runtime/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "lib/runtime/log.h"

namespace ditgen::runtime {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), tty_(isatty(fileno(stderr)) != 0) {}

void Progress::advance(double seconds) {
  ++done_;
  elapsed_ += seconds;
  if (log::rank() != 0) return;
  const int width = 24;
  const int filled = total_ > 0 ? static_cast<int>(width * done_ / total_) : width;
  std::string bar(filled, '#');
  bar.resize(width, ' ');
  const double per = elapsed_ / static_cast<double>(done_);
  if (tty_) {
    std::fprintf(stderr, "\r%-8s [%s] %lld/%lld  %.3f s/it  eta %.1f s ", label_.c_str(), bar.c_str(),
                 static_cast<long long>(done_), static_cast<long long>(total_), per, per * (total_ - done_));
  } else if (done_ == total_ || done_ % std::max<int64_t>(1, total_ / 10) == 0) {  // about ten lines in logs
    std::fprintf(stderr, "%s %lld/%lld  %.3f s/it\n", label_.c_str(), static_cast<long long>(done_),
                 static_cast<long long>(total_), per);
  }
  std::fflush(stderr);
}

void Progress::finish() {
  if (log::rank() == 0 && tty_) std::fprintf(stderr, "\n");
}

}  // namespace ditgen::runtime
