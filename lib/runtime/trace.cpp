#include "lib/runtime/trace.h"

#include <spdlog/spdlog.h>

#include <map>

#include "lib/io/json.h"
#include "lib/io/safetensors.h"
#include "lib/runtime/error.h"
#include "lib/verify/compare.h"

namespace ditgen::runtime {

namespace {
std::string g_dir;
std::map<std::string, at::Tensor>& traced() {
  static std::map<std::string, at::Tensor> m;
  return m;
}
}  // namespace

void trace_enable(const std::string& dir) {
  DITGEN_CHECK(io::dir_exists(dir), "--trace '{}' is not a folder", dir);
  g_dir = dir;
}

bool trace_enabled() { return !g_dir.empty(); }

void trace(const std::string& name, const at::Tensor& t) {
  if (g_dir.empty() || traced().count(name)) return;  // the first call (first step) of each name
  traced()[name] = t.detach().to(at::kCPU, at::kFloat).clone();
}

void trace_flush(int rank) {
  if (g_dir.empty() || traced().empty()) return;
  const std::string path = io::join_path(g_dir, fmt::format("trace_rank{}.safetensors", rank));
  io::write_safetensors(path, traced());
  spdlog::info("traced {} tensors to {}", traced().size(), path);
}

double trace_diff(const std::string& a, const std::string& b) {
  auto fa = io::SafetensorsFile::open(a), fb = io::SafetensorsFile::open(b);
  double worst = 0;
  int common = 0;
  for (const auto& name : fa->names()) {
    if (!fb->has(name)) continue;
    ++common;
    const at::Tensor ta = fa->read(name), tb = fb->read(name);
    const double e = ta.sizes() == tb.sizes() ? verify::rel_error(ta, tb) : NAN;
    worst = std::isnan(e) ? e : std::max(worst, e);
    spdlog::info("{:<40} {}", name,
                 ta.sizes() == tb.sizes()
                     ? fmt::format("rel {:.2e}", e)
                     : "shape " + io::shape_str(ta.sizes()) + " vs " + io::shape_str(tb.sizes()));
  }
  DITGEN_CHECK(common > 0, "'{}' and '{}' share no traced tensor names", a, b);
  return worst;
}

}  // namespace ditgen::runtime
