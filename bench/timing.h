#pragma once
// The benchmarks' timing helper: median seconds of `reps` device-synchronised runs after 3 warm-ups.
#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "lib/runtime/metrics.h"

namespace ditgen::bench {

template <typename F>
double time_it(const at::Device& dev, int reps, F&& fn) {
  for (int i = 0; i < 3; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < std::max(reps, 1); ++i) {
    runtime::Stopwatch sw(dev);
    fn();
    t.push_back(sw.seconds());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace ditgen::bench
