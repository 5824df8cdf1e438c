#include "lib/verify/compare.h"

#include <spdlog/spdlog.h>

#include <cmath>

#include "lib/io/safetensors.h"
#include "lib/nn/offload.h"

namespace ditgen::verify {

bool Report::ok() const {
  if (checks.empty()) return false;  // a case that checked nothing did not pass
  for (const auto& c : checks)
    if (!c.pass) return false;
  return true;
}

void Report::print() const {
  for (const auto& c : checks) {
    std::string line = fmt::format("{} {}/{}", c.pass ? "PASS" : "FAIL", case_name, c.name);
    if (c.tolerance > 0) line += fmt::format("  rel {:.2e} (tol {:.0e})", c.rel_error, c.tolerance);
    if (c.rel_error > 1e-3) line += fmt::format("  cosine {:.6f}", c.cosine);
    if (!c.detail.empty()) line += "  " + c.detail;
    spdlog::info(line);
  }
  if (checks.empty()) spdlog::info("FAIL {}: no checks ran", case_name);
}

double rel_error(const at::Tensor& ours, const at::Tensor& ref) {
  at::Tensor a = ours.detach().to(at::kCPU, at::kDouble), b = ref.detach().to(at::kCPU, at::kDouble);
  if (a.sizes() != b.sizes()) return NAN;
  if (!at::isfinite(a).all().item<bool>()) return NAN;
  const double num = (a - b).norm().item<double>();
  const double den = b.norm().item<double>();
  return den > 0 ? num / den : num;
}

void compare(Report& report, const std::string& name, const at::Tensor& ours, const at::Tensor& ref,
             double tolerance) {
  Check c;
  c.name = name;
  c.tolerance = tolerance;
  if (ours.sizes() != ref.sizes()) {
    c.rel_error = NAN;
    c.detail = fmt::format("shape {} vs reference {}", io::shape_str(ours.sizes()), io::shape_str(ref.sizes()));
  } else {
    c.rel_error = rel_error(ours, ref);
    if (std::isnan(c.rel_error)) {
      c.detail = "non-finite values";
    } else {
      const at::Tensor a = ours.detach().to(at::kCPU, at::kDouble).flatten(), b = ref.detach().to(at::kCPU, at::kDouble).flatten();
      const double na = a.norm().item<double>(), nb = b.norm().item<double>();
      c.cosine = na > 0 && nb > 0 ? a.dot(b).item<double>() / (na * nb) : (na == nb ? 1.0 : 0.0);
    }
  }
  c.pass = !std::isnan(c.rel_error) && c.rel_error <= tolerance;
  report.checks.push_back(c);
}

void expect_equal(Report& report, const std::string& name, bool equal, const std::string& detail) {
  Check c;
  c.name = name;
  c.pass = equal;
  c.detail = equal ? "exact" : detail;
  report.checks.push_back(c);
}

void expect_streamed(Report& report, const std::string& name, const nn::OffloadStats* stats) {
  if (stats == nullptr) return;
  Check c;
  c.name = name;
  c.pass = stats->copies > 0 && stats->wasted == 0;
  c.detail = "offload " + stats->summary();
  report.checks.push_back(c);
}

}  // namespace ditgen::verify
