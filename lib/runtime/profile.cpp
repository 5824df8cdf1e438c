#include "lib/runtime/profile.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/version.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <spdlog/fmt/fmt.h>

#include "lib/io/json.h"
#include "lib/io/output_files.h"
#include "lib/runtime/error.h"

namespace ditgen::runtime {

namespace {

namespace tp = torch::profiler::impl;
namespace ap = torch::autograd::profiler;

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

const char* const kClasses[] = {"GEMM", "attention", "norm", "elementwise", "copy / cast", "communication", "other"};

// Event times: LibTorch 2.1 moved KinetoEvent to nanoseconds.
double start_us(const ap::KinetoEvent& e) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  return static_cast<double>(e.startNs()) / 1000.0;
#else
  return static_cast<double>(e.startUs());
#endif
}
double duration_us(const ap::KinetoEvent& e) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  return static_cast<double>(e.durationNs()) / 1000.0;
#else
  return static_cast<double>(e.durationUs());
#endif
}

// CPU operators nest (aten::linear calls aten::addmm): each one's self time is its duration less that of
// the operators it encloses on the same thread.
void to_self_times(std::vector<ProfiledKernel>& ops) {
  std::stable_sort(ops.begin(), ops.end(), [](const ProfiledKernel& a, const ProfiledKernel& b) {
    return a.thread != b.thread ? a.thread < b.thread
                                : (a.start_us != b.start_us ? a.start_us < b.start_us : a.duration_us > b.duration_us);
  });
  std::vector<double> full(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) full[i] = ops[i].duration_us;
  std::vector<size_t> open;  // enclosing operators, innermost last
  for (size_t i = 0; i < ops.size(); ++i) {
    while (!open.empty() && (ops[open.back()].thread != ops[i].thread ||
                             ops[open.back()].start_us + full[open.back()] <= ops[i].start_us))
      open.pop_back();
    if (!open.empty()) ops[open.back()].duration_us -= full[i];
    open.push_back(i);
  }
  for (auto& op : ops) op.duration_us = std::max(0.0, op.duration_us);
}

}  // namespace

std::string kernel_class(const std::string& raw) {
  std::string n = raw;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  if (has(n, "nccl") || has(n, "all_reduce") || has(n, "allreduce") || has(n, "all_gather") ||
      has(n, "allgather") || has(n, "reduce_scatter") || has(n, "all_to_all") || has(n, "alltoall") ||
      has(n, "sendrecv") || has(n, "c10d::") || has(n, "mpi_"))
    return "communication";
  if (has(n, "flash") || has(n, "fmha") || has(n, "attention") || has(n, "sdpa") || has(n, "cudnn_generated_fort") ||
      has(n, "softmax"))
    return "attention";
  if (has(n, "gemm") || has(n, "cutlass") || has(n, "xmma") || has(n, "nvjet") || has(n, "scaled_mm") ||
      n == "aten::mm" || n == "aten::addmm" || n == "aten::bmm" || n == "aten::baddbmm" || n == "aten::matmul" ||
      n == "aten::linear" || has(n, "gemv") || has(n, "dot_kernel"))
    return "GEMM";
  if (has(n, "norm") || has(n, "rms"))
    return "norm";
  if (has(n, "quantize")) return "copy / cast";  // ditgen's FP8 activation quantisers
  if (has(n, "gated_residual") || has(n, "swiglu")) return "elementwise";  // ditgen's fused elementwise passes
  if (has(n, "memcpy") || has(n, "memset") || has(n, "copy") || has(n, "cast") || has(n, "aten::to") ||
      has(n, "contiguous") || has(n, "aten::cat") || has(n, "cat_") || has(n, "clone") || has(n, "transpose") ||
      has(n, "permute") || has(n, "index") || has(n, "fill"))
    return "copy / cast";
  if (has(n, "elementwise") || has(n, "vectorized") || has(n, "unrolled") || has(n, "reduce_kernel") ||
      has(n, "silu") || has(n, "gelu") || has(n, "sigmoid") || has(n, "tanh") || has(n, "aten::add") ||
      has(n, "aten::mul") || has(n, "aten::sub") || has(n, "aten::div") || has(n, "aten::exp") ||
      has(n, "aten::addcmul") || has(n, "aten::where") || has(n, "aten::sum") || has(n, "aten::mean") ||
      has(n, "aten::pow") || has(n, "aten::rsqrt") || has(n, "aten::sqrt") || has(n, "aten::neg") ||
      has(n, "aten::cos") || has(n, "aten::sin") || has(n, "aten::clamp") || has(n, "aten::abs") ||
      has(n, "aten::max") || has(n, "aten::amax"))
    return "elementwise";
  return "other";
}

ProfileSummary summarize(const std::vector<ProfiledKernel>& kernels, bool device, size_t top) {
  ProfileSummary s;
  s.device = device;
  std::map<std::string, ProfileSummary::Row> by_class, by_name;
  for (const char* c : kClasses) by_class[c] = {c, 0, 0};
  for (const auto& k : kernels) {
    if (k.device != device) continue;
    auto& c = by_class[kernel_class(k.name)];
    c.total_us += k.duration_us;
    c.count += 1;
    auto& n = by_name[k.name];
    n.name = k.name;
    n.total_us += k.duration_us;
    n.count += 1;
    s.total_us += k.duration_us;
  }
  for (const char* c : kClasses) s.classes.push_back(by_class[c]);
  for (auto& kv : by_name) s.kernels.push_back(kv.second);
  std::sort(s.kernels.begin(), s.kernels.end(),
            [](const ProfileSummary::Row& a, const ProfileSummary::Row& b) { return a.total_us > b.total_us; });
  if (s.kernels.size() > top) s.kernels.resize(top);
  return s;
}

std::string summary_markdown(const ProfileSummary& s, const std::string& title) {
  const double total = std::max(s.total_us, 1e-9);
  std::string out = fmt::format("## {}\n\n{} time {:.3f} ms\n\n| class | ms | share | count |\n|---|---:|---:|---:|\n",
                                title, s.device ? "GPU kernel" : "CPU operator self", s.total_us / 1000.0);
  for (const auto& r : s.classes)
    out += fmt::format("| {} | {:.3f} | {:.1f} % | {} |\n", r.name, r.total_us / 1000.0, 100.0 * r.total_us / total,
                       r.count);
  out += fmt::format("\n{} longest {}:\n\n| {} | class | ms | share | count |\n|---|---|---:|---:|---:|\n",
                     s.kernels.size(), s.device ? "kernels" : "operators", s.device ? "kernel" : "operator");
  for (const auto& r : s.kernels) {
    std::string name = r.name.size() > 90 ? r.name.substr(0, 87) + "..." : r.name;
    for (auto& c : name)
      if (c == '|') c = '/';
    out += fmt::format("| {} | {} | {:.3f} | {:.1f} % | {} |\n", name, kernel_class(r.name), r.total_us / 1000.0,
                       100.0 * r.total_us / total, r.count);
  }
  return out;
}

StepProfiler::StepProfiler(std::string dir, int rank, bool cuda) : dir_(std::move(dir)), rank_(rank), cuda_(cuda) {}

StepProfiler::~StepProfiler() {
  if (running_) {
    try {
      ap::disableProfiler();
    } catch (...) {  // an error is already on its way
    }
  }
}

void StepProfiler::start() {
  if (!on() || running_ || done_) return;
  const tp::ProfilerConfig config(tp::ProfilerState::KINETO);
  std::set<tp::ActivityType> activities = {tp::ActivityType::CPU};
  if (cuda_) activities.insert(tp::ActivityType::CUDA);
  ap::prepareProfiler(config, activities);
  ap::enableProfiler(config, activities);
  running_ = true;
}

std::string StepProfiler::stop(const std::string& title) {
  if (!running_) return "";
  running_ = false;
  done_ = true;
  const std::unique_ptr<ap::ProfilerResult> result = ap::disableProfiler();
  std::vector<ProfiledKernel> cpu, all;
  nlohmann::json events = nlohmann::json::array();
  for (const auto& e : result->events()) {
    ProfiledKernel k{e.name(), start_us(e), duration_us(e), e.startThreadId(), e.deviceType() != c10::DeviceType::CPU};
    events.push_back({{"name", k.name},
                      {"ph", "X"},
                      {"ts", k.start_us},
                      {"dur", k.duration_us},
                      {"pid", k.device ? fmt::format("rank {} device", rank_) : fmt::format("rank {} host", rank_)},
                      {"tid", k.device ? static_cast<uint64_t>(e.deviceResourceId()) : k.thread},
                      {"cat", kernel_class(k.name)}});
    (k.device ? all : cpu).push_back(std::move(k));
  }
  const bool device = !all.empty();
  if (!device) {
    to_self_times(cpu);
    all = std::move(cpu);
  }
  const ProfileSummary s = summarize(all, device);
  const std::string table = summary_markdown(s, fmt::format("{} (rank {})", title, rank_));
  const std::string stem = io::join_path(dir_, fmt::format("profile_rank{}", rank_));
  io::write_file_atomic(io::join_path(dir_, fmt::format("trace_rank{}.json", rank_)),
                        nlohmann::json({{"traceEvents", events}, {"displayTimeUnit", "ms"}}).dump() + "\n");
  io::write_file_atomic(stem + ".md", table);
  nlohmann::json j = {{"title", title}, {"rank", rank_}, {"device", device}, {"total_ms", s.total_us / 1000.0}};
  for (const auto& r : s.classes) j["classes"][r.name] = {{"ms", r.total_us / 1000.0}, {"count", r.count}};
  for (const auto& r : s.kernels) j["kernels"].push_back({{"name", r.name}, {"ms", r.total_us / 1000.0}, {"count", r.count}});
  io::write_file_atomic(stem + ".json", j.dump(2) + "\n");
  return table;
}

}  // namespace ditgen::runtime
