#include "lib/io/report.h"

#include <cstdio>
#include <fstream>

#include "lib/dist/communicator.h"
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
  nlohmann::json rs = nlohmann::json::array();
  for (const auto& r : ranks) {
    rs.push_back({{"rank", r.rank},
                  {"load_s", r.load_seconds},
                  {"bytes_read", r.bytes_read},
                  {"bytes_read_by_component",
                   {{"transformer", r.bytes_transformer}, {"text_encoder", r.bytes_text_encoder}, {"vae", r.bytes_vae}}},
                  {"host_rss_peak_bytes", r.host_rss_peak},
                  {"device_allocated_peak_bytes", r.device_allocated_peak},
                  {"device_reserved_peak_bytes", r.device_reserved_peak}});
  }
  j["ranks"] = rs;
  j["outputs"] = outputs;
  return j;
}

std::string RunReport::table() const {
  std::string t = fmt::format("{} on {}\n", model, device);
  t += fmt::format("  {:<14} {:>10}\n", "stage", "seconds");
  for (const auto& s : stages) t += fmt::format("  {:<14} {:>10.3f}\n", s.first, s.second);
  if (!step_seconds.empty()) {
    double sum = 0, mx = 0;
    for (double s : step_seconds) {
      sum += s;
      mx = std::max(mx, s);
    }
    t += fmt::format("  {:<14} {:>10.3f}  (mean of {}, max {:.3f})\n", "per step", sum / step_seconds.size(),
                     step_seconds.size(), mx);
  }
  t += fmt::format("  {:<5} {:>8} {:>12} {:>12} {:>14} {:>16} {:>16}\n", "rank", "load s", "read", "(DiT)",
                   "host RSS peak", "device alloc pk", "device rsrv pk");
  for (const auto& r : ranks) {
    t += fmt::format("  {:<5} {:>8.2f} {:>12} {:>12} {:>14} {:>16} {:>16}\n", r.rank, r.load_seconds,
                     human_bytes(static_cast<double>(r.bytes_read)), human_bytes(static_cast<double>(r.bytes_transformer)),
                     human_bytes(static_cast<double>(r.host_rss_peak)),
                     human_bytes(static_cast<double>(r.device_allocated_peak)),
                     human_bytes(static_cast<double>(r.device_reserved_peak)));
  }
  return t;
}

std::vector<RankStats> gather_rank_stats(const RankStats& mine, dist::Communicator& world) {
  at::Tensor t = at::tensor({mine.load_seconds, static_cast<double>(mine.bytes_read),
                             static_cast<double>(mine.host_rss_peak), static_cast<double>(mine.device_allocated_peak),
                             static_cast<double>(mine.device_reserved_peak), static_cast<double>(mine.bytes_transformer),
                             static_cast<double>(mine.bytes_text_encoder), static_cast<double>(mine.bytes_vae)},
                            at::kDouble)
                     .unsqueeze(0);
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
    out.push_back(s);
  }
  return out;
}

}  // namespace ditgen::io
