#pragma once
// Comparison against golden references: relative error ||ours - ref|| / ||ref|| over the whole
// tensor, NaN-checked, collected into a report that names every check.
#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace ditgen::nn {
struct OffloadStats;
}

namespace ditgen::verify {

struct Check {
  std::string name;
  double rel_error = 0;   // NaN when shapes differ or values are not finite
  double tolerance = 0;
  double cosine = 1;      // of ours and the reference, flattened (printed for lossy results, rel > 1e-3)
  bool pass = false;
  std::string detail;     // shape mismatch, NaN, or an exact-match note
};

struct Report {
  std::string case_name;
  std::vector<Check> checks;
  bool ok() const;
  // One line per check: "PASS flux2_transformer_b1_h6w8_t20/out.sample  rel 3.1e-07 (tol 1e-04)".
  void print() const;
};

double rel_error(const at::Tensor& ours, const at::Tensor& ref);

// Adds a tensor check to `report`.
void compare(Report& report, const std::string& name, const at::Tensor& ours, const at::Tensor& ref,
             double tolerance);
// Adds an exact check (ids, counts, strings).
void expect_equal(Report& report, const std::string& name, bool equal, const std::string& detail = "");
// --offload: adds the check that the streamed blocks were copied and no copy was wasted, with what the
// streamer did as its detail (`stats` null: nothing streamed, no check).
void expect_streamed(Report& report, const std::string& name, const nn::OffloadStats* stats);

}  // namespace ditgen::verify
