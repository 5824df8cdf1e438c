#pragma once
// Logging goes through spdlog's default logger directly: spdlog::info("{} steps", n), spdlog::debug(...),
// spdlog::warn(...), spdlog::error(...) with fmt format strings (a lone string argument is printed as it is,
// braces included). This file only sets that logger up.
#include <spdlog/common.h>

namespace ditgen::runtime {

// Sets up spdlog's default logger for rank `rank` of a `world`-rank job:
// - trace, debug and info lines go to stdout, warnings and errors to stderr, each line flushed at once
//   (an error must be out before MPI_Abort ends the job);
// - info lines are printed as they are (scripts and tests parse them), debug and trace lines start with
//   "[debug] " / "[trace] ", warnings and errors with "[rank r/w] warning: " / "[rank r/w] error: " (no rank
//   prefix for a single process);
// - at `level` debug or trace every line starts with a timestamp "[12:34:56.789] ";
// - rank 0 logs at `level`, the other ranks at warn or above (max(level, warn)): progress and results once,
//   warnings and errors from every rank.
// comm::launch() calls it once the rank is known (level info); the command line again with --log-level.
void configure_logging(int rank, int world, spdlog::level::level_enum level = spdlog::level::info);

}  // namespace ditgen::runtime
