#pragma once
// The run report: per-stage latency, per-step denoise times, per-rank load and memory numbers.
// Printed as a table on rank 0 and written as JSON next to the output.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace ditgen::comm {
class Communicator;
}

namespace ditgen::io {

// One stage's memory peaks on one rank (--track-memory; the counters reset at the stage's start).
struct StageMemory {
  std::string stage;  // "load", "text_encode", "load_transformer", "denoise", "vae_decode"
  int64_t host_rss_peak = 0;
  int64_t device_allocated_peak = 0;
  int64_t device_reserved_peak = 0;
};

struct RankStats {
  int rank = 0;
  double load_seconds = 0;
  double startup_seconds = 0;  // from the process's start to the first denoising step's start
  uint64_t bytes_read = 0;  // all components
  uint64_t bytes_transformer = 0, bytes_text_encoder = 0, bytes_vae = 0;
  int64_t host_rss_peak = 0;
  int64_t device_allocated_peak = 0;
  int64_t device_reserved_peak = 0;
  std::vector<StageMemory> stages;  // --track-memory: in run order (the same stages on every rank)
};

struct RunReport {
  std::string model;                                    // "flux2", "flux2-tiny"
  std::string device;                                   // "NVIDIA H100 80GB HBM3 x 4", "cpu x 1"
  nlohmann::json settings = nlohmann::json::object();   // prompt, size, steps, mesh, dtype...
  std::vector<std::pair<std::string, double>> stages;   // in order: load, text_encode, denoise, vae_decode, write
  std::vector<double> step_seconds;                     // each denoising step of the timed run
  double first_step_seconds = 0;                        // the job's very first step (the warm-up's, if any)
  std::vector<RankStats> ranks;                         // every rank, gathered on rank 0
  std::vector<std::string> outputs;
  nlohmann::json extra = nlohmann::json::object();      // further sections (e.g. "cache"), copied as they are

  void add_stage(const std::string& name, double seconds);
  nlohmann::json to_json() const;
  std::string table() const;
};

// Gathers every rank's stats onto every rank (collective over `world`).
std::vector<RankStats> gather_rank_stats(const RankStats& mine, comm::Communicator& world);

std::string human_bytes(double bytes);
inline std::string human_bytes(int64_t bytes) { return human_bytes(static_cast<double>(bytes)); }
double median(std::vector<double> values);  // 0 for none

}  // namespace ditgen::io
