#include "lib/runtime/progress.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace ditgen::runtime {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), tty_(isatty(fileno(stderr)) != 0) {}

void Progress::advance(double seconds, int64_t bytes) {
  ++done_;
  elapsed_ += seconds;
  bytes_ += bytes;
  if (!spdlog::should_log(spdlog::level::info)) return;  // rank 0 only (other ranks log warn and above)
  const double per = elapsed_ / static_cast<double>(done_);
  const double eta = per * static_cast<double>(total_ - done_);
  std::string amount;
  if (bytes_ > 0) {
    const double gib = static_cast<double>(bytes_) / (1 << 30);
    amount = fmt::format("  {:.2f} GiB  {:.2f} GiB/s", gib, elapsed_ > 0 ? gib / elapsed_ : 0.0);
  } else {
    amount = fmt::format("  {:.3f} s/it", per);
  }
  if (tty_) {
    const int width = 24;
    const int filled = total_ > 0 ? static_cast<int>(width * std::min(done_, total_) / total_) : width;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, ' ');
    std::fprintf(stderr, "\r%-8s [%s] %lld/%lld%s  eta %.1f s ", label_.c_str(), bar.c_str(),
                 static_cast<long long>(done_), static_cast<long long>(total_), amount.c_str(), eta);
  } else if (done_ == total_ || done_ % std::max<int64_t>(1, total_ / 10) == 0) {  // about ten lines in logs
    std::fprintf(stderr, "%s %lld/%lld%s\n", label_.c_str(), static_cast<long long>(done_),
                 static_cast<long long>(total_), amount.c_str());
  }
  std::fflush(stderr);
}

void Progress::finish() {
  if (spdlog::should_log(spdlog::level::info) && tty_) std::fprintf(stderr, "\n");
}

}  // namespace ditgen::runtime
