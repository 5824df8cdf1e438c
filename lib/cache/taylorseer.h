#pragma once
// TaylorSeer calibrator (docs/reference/cache-dit-semantics.md §5.5): from the values Y of the computed
// steps it keeps the ladder d0 = Y, d(i+1) = (d_i - previous d_i) / window, where window is the step
// distance to the previous computed step (finite differences of consecutive computed steps, all orders
// divided by the latest window, as the reference does), and extrapolates a later step as
// sum_i d_i * e^i / i! with e = steps since the last computed step.
#include <ATen/ATen.h>

#include <vector>

namespace ditgen::cache {

class TaylorSeer {
 public:
  explicit TaylorSeer(int64_t order = 1);

  // A computed step's value. Higher orders start only from step 2 on (the reference's "current step
  // > 1"), and a value of another shape starts the ladder afresh.
  void update(int64_t step, const at::Tensor& y);
  // The extrapolation to `step` (after the last update); undefined before any update.
  at::Tensor approximate(int64_t step) const;

  bool empty() const { return !current_[0].defined(); }
  int64_t last_step() const { return last_; }
  int64_t order() const { return order_; }
  // Orders available now (1 = only the value itself).
  int64_t terms() const;
  void reset();

 private:
  int64_t order_;
  std::vector<at::Tensor> current_, previous_;  // d_0 .. d_order
  int64_t last_ = -1;
};

}  // namespace ditgen::cache
