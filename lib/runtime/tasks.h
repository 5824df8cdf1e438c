#pragma once
// Independent CPU tasks (PNG frames of a video) on plain threads, one per core this process may use.
// Not ATen's intra-op pool: that one follows OMP_NUM_THREADS (often 1 on GPU machines) and the per-rank
// share of the cores, which suit tensor math, not a burst of independent encodes.
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ditgen::runtime {

// Runs fn(0) .. fn(n - 1), each once, on up to as many threads as the cores this process may run on.
// The first exception a task throws is rethrown here after every thread has ended.
inline void parallel_tasks(int64_t n, const std::function<void(int64_t)>& fn) {
  cpu_set_t set;
  const int cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                                   : static_cast<int>(std::thread::hardware_concurrency());
  const int64_t threads = std::min<int64_t>(n, std::max(1, cores));
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    for (int64_t i = next++; i < n; i = next++) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next = n;  // stop handing out tasks
      }
    }
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace ditgen::runtime
