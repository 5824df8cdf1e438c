#include "lib/io/report.h"

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "lib/comm/communicator.h"
#include "lib/runtime/error.h"

namespace ditgen::io {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  return fmt::format("{:.2f} {}", b, units[u]);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void RunReport::add_stage(const std::string& name, double seconds) { stages.emplace_back(name, seconds); }

nlohmann::json RunReport::to_json() const {
  nlohmann::json j;
  j["model"] = model;
  j["device"] = device;
  j["settings"] = settings;
  nlohmann::json st = nlohmann::json::object();
  for (const auto& s : stages) st[s.first + "_s"] = s.second;
  j["latency"] = st;
  j["denoise_steps_s"] = step_seconds;
  if (!step_seconds.empty()) {
    j["first_step_s"] = first_step_seconds;
    j["step_median_s"] = median(step_seconds);
  }
  nlohmann::json rs = nlohmann::json::array();
  for (const auto& r : ranks) {
    rs.push_back({{"rank", r.rank},
                  {"load_s", r.load_seconds},
                  {"startup_s", r.startup_seconds},
                  {"bytes_read", r.bytes_read},
                  {"bytes_read_by_component",
                   {{"transformer", r.bytes_transformer}, {"text_encoder", r.bytes_text_encoder}, {"vae", r.bytes_vae}}},
                  {"host_rss_peak_bytes", r.host_rss_peak},
                  {"device_allocated_peak_bytes", r.device_allocated_peak},
                  {"device_reserved_peak_bytes", r.device_reserved_peak}});
    if (r.stages.empty()) continue;
    nlohmann::json by_stage = nlohmann::json::array();
    for (const auto& m : r.stages)
      by_stage.push_back({{"stage", m.stage},
                          {"host_rss_peak_bytes", m.host_rss_peak},
                          {"device_allocated_peak_bytes", m.device_allocated_peak},
                          {"device_reserved_peak_bytes", m.device_reserved_peak}});
    rs.back()["memory_by_stage"] = by_stage;
  }
  j["ranks"] = rs;
  j["outputs"] = outputs;
  for (const auto& [k, v] : extra.items()) j[k] = v;
  return j;
}

std::string RunReport::table() const {
  std::string t = fmt::format("{} on {}\n", model, device);
  if (settings.contains("gpu_memory_limit")) {
    const nlohmann::json& cap = settings["gpu_memory_limit"];
    t += fmt::format("  GPU memory capped at {:g} GiB per rank ({})\n", cap.value("gib", 0.0),
                     cap.value("source", std::string()));
  }
  t += fmt::format("  {:<14} {:>10}\n", "stage", "seconds");
  for (const auto& s : stages) t += fmt::format("  {:<14} {:>10.3f}\n", s.first, s.second);
  if (!step_seconds.empty()) {
    double sum = 0, mx = 0;
    for (double s : step_seconds) {
      sum += s;
      mx = std::max(mx, s);
    }
    t += fmt::format("  {:<14} {:>10.3f}  (mean of {}, median {:.3f}, max {:.3f})\n", "per step",
                     sum / step_seconds.size(), step_seconds.size(), median(step_seconds), mx);
    t += fmt::format("  {:<14} {:>10.3f}  (the job's first step: warm-up, kernel plans)\n", "first step",
                     first_step_seconds);
  }
  t += fmt::format("  {:<5} {:>8} {:>9} {:>12} {:>12} {:>14} {:>16} {:>16}\n", "rank", "load s", "start s", "read",
                   "(DiT)", "host RSS peak", "device alloc pk", "device rsrv pk");
  for (const auto& r : ranks) {
    t += fmt::format("  {:<5} {:>8.2f} {:>9.2f} {:>12} {:>12} {:>14} {:>16} {:>16}\n", r.rank, r.load_seconds,
                     r.startup_seconds,
                     human_bytes(static_cast<double>(r.bytes_read)), human_bytes(static_cast<double>(r.bytes_transformer)),
                     human_bytes(static_cast<double>(r.host_rss_peak)),
                     human_bytes(static_cast<double>(r.device_allocated_peak)),
                     human_bytes(static_cast<double>(r.device_reserved_peak)));
  }
  if (!ranks.empty() && !ranks[0].stages.empty()) {
    // Peak per stage and rank: device allocated on GPUs, host RSS on the CPU.
    bool device = false;
    for (const auto& r : ranks)
      for (const auto& m : r.stages) device = device || m.device_allocated_peak > 0;
    t += fmt::format("  peak memory by stage ({})\n  {:<5}", device ? "device allocated" : "host RSS", "rank");
    for (const auto& m : ranks[0].stages) t += fmt::format(" {:>16}", m.stage);
    t += "\n";
    for (const auto& r : ranks) {
      t += fmt::format("  {:<5}", r.rank);
      for (const auto& m : r.stages)
        t += fmt::format(" {:>16}", human_bytes(static_cast<double>(device ? m.device_allocated_peak : m.host_rss_peak)));
      t += "\n";
    }
  }
  return t;
}

std::vector<RankStats> gather_rank_stats(const RankStats& mine, comm::Communicator& world) {
  std::vector<double> values = {mine.load_seconds, static_cast<double>(mine.bytes_read),
                                static_cast<double>(mine.host_rss_peak), static_cast<double>(mine.device_allocated_peak),
                                static_cast<double>(mine.device_reserved_peak), static_cast<double>(mine.bytes_transformer),
                                static_cast<double>(mine.bytes_text_encoder), static_cast<double>(mine.bytes_vae),
                                mine.startup_seconds};
  for (const auto& m : mine.stages)  // every rank ran the same stages
    for (int64_t v : {m.host_rss_peak, m.device_allocated_peak, m.device_reserved_peak})
      values.push_back(static_cast<double>(v));
  at::Tensor t = at::tensor(values, at::kDouble).unsqueeze(0);
  const int n = world.size();
  at::Tensor all = world.all_gather(t, 0, std::vector<int64_t>(n, 1));
  std::vector<RankStats> out;
  for (int r = 0; r < n; ++r) {
    RankStats s;
    s.rank = r;
    s.load_seconds = all[r][0].item<double>();
    s.bytes_read = static_cast<uint64_t>(all[r][1].item<double>());
    s.host_rss_peak = static_cast<int64_t>(all[r][2].item<double>());
    s.device_allocated_peak = static_cast<int64_t>(all[r][3].item<double>());
    s.device_reserved_peak = static_cast<int64_t>(all[r][4].item<double>());
    s.bytes_transformer = static_cast<uint64_t>(all[r][5].item<double>());
    s.bytes_text_encoder = static_cast<uint64_t>(all[r][6].item<double>());
    s.bytes_vae = static_cast<uint64_t>(all[r][7].item<double>());
    s.startup_seconds = all[r][8].item<double>();
    for (size_t k = 0; k < mine.stages.size(); ++k) {
      StageMemory m;
      m.stage = mine.stages[k].stage;
      m.host_rss_peak = static_cast<int64_t>(all[r][9 + 3 * k].item<double>());
      m.device_allocated_peak = static_cast<int64_t>(all[r][10 + 3 * k].item<double>());
      m.device_reserved_peak = static_cast<int64_t>(all[r][11 + 3 * k].item<double>());
      s.stages.push_back(m);
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace ditgen::io
