#include "lib/runtime/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <string>

namespace ditgen::runtime {
namespace {

// stdout for trace, debug and info; warnings and errors go to the stderr sink alone. Like the stderr sink,
// it writes and flushes each line under spdlog's console mutex.
class StdoutBelowWarnSink final : public spdlog::sinks::stdout_sink_mt {
 public:
  void log(const spdlog::details::log_msg& msg) override {
    if (msg.level < spdlog::level::warn) spdlog::sinks::stdout_sink_mt::log(msg);
  }
};

// The pattern flag %*: what precedes the message for its level. Nothing for info, "[debug] " or
// "[trace] " below it, "[rank r/w] warning: " / "error: " / "critical: " above it.
class LevelTag final : public spdlog::custom_flag_formatter {
 public:
  explicit LevelTag(std::string rank_prefix) : rank_prefix_(std::move(rank_prefix)) {}

  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    if (msg.level == spdlog::level::info) return;
    const auto name = spdlog::level::to_string_view(msg.level);  // "debug", "warning", "error", ...
    const std::string tag = msg.level < spdlog::level::info
                                ? "[" + std::string(name.data(), name.size()) + "] "
                                : rank_prefix_ + std::string(name.data(), name.size()) + ": ";
    dest.append(tag.data(), tag.data() + tag.size());
  }

  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<LevelTag>(rank_prefix_); }

 private:
  std::string rank_prefix_;
};

}  // namespace

void configure_logging(int rank, int world, spdlog::level::level_enum level) {
  const std::string rank_prefix = world > 1 ? "[rank " + std::to_string(rank) + "/" + std::to_string(world) + "] " : "";
  auto err = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  err->set_level(spdlog::level::warn);
  auto logger = std::make_shared<spdlog::logger>(
      "ditgen", spdlog::sinks_init_list{std::make_shared<StdoutBelowWarnSink>(), std::move(err)});
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<LevelTag>('*', rank_prefix);
  formatter->set_pattern(level <= spdlog::level::debug ? "[%H:%M:%S.%e] %*%v" : "%*%v");
  logger->set_formatter(std::move(formatter));
  logger->set_level(rank == 0 ? level : std::max(level, spdlog::level::warn));
  logger->flush_on(spdlog::level::trace);  // the sinks flush every line already; say so for any sink added
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace ditgen::runtime
