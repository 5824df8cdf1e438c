#include "lib/cache/taylorseer.h"

#include "lib/runtime/error.h"

namespace ditgen::cache {

TaylorSeer::TaylorSeer(int64_t order) : order_(order) {
  DITGEN_CHECK(order >= 1, "--taylorseer-order must be at least 1, got {}", order);
  reset();
}

void TaylorSeer::reset() {
  current_.assign(static_cast<size_t>(order_ + 1), at::Tensor());
  previous_.assign(static_cast<size_t>(order_ + 1), at::Tensor());
  last_ = -1;
}

int64_t TaylorSeer::terms() const {
  int64_t n = 0;
  while (n <= order_ && current_[static_cast<size_t>(n)].defined()) ++n;
  return n;
}

void TaylorSeer::update(int64_t step, const at::Tensor& y) {
  if (current_[0].defined() && current_[0].sizes() != y.sizes()) reset();
  previous_ = current_;
  std::vector<at::Tensor> next(static_cast<size_t>(order_ + 1));
  next[0] = y;
  const double window = static_cast<double>(step - last_);
  for (int64_t i = 0; i < order_; ++i) {
    const auto k = static_cast<size_t>(i);
    if (!previous_[k].defined() || step <= 1) break;
    next[k + 1] = (next[k] - previous_[k]) / window;
  }
  current_ = std::move(next);
  last_ = step;
}

at::Tensor TaylorSeer::approximate(int64_t step) const {
  if (!current_[0].defined()) return at::Tensor();
  const double e = static_cast<double>(step - last_);
  at::Tensor out = current_[0];
  double coef = 1.0;  // e^i / i!
  for (int64_t i = 1; i <= order_; ++i) {
    const auto& d = current_[static_cast<size_t>(i)];
    if (!d.defined()) break;
    coef *= e / static_cast<double>(i);
    out = out + d * coef;
  }
  return out;
}

}  // namespace ditgen::cache
