// runtime::parallel_tasks: every task runs once, on several threads, and a task's exception reaches the caller.
#include <catch2/catch.hpp>

#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "lib/runtime/tasks.h"

using ditgen::runtime::parallel_tasks;

TEST_CASE("parallel_tasks runs each task once and rethrows the first failure", "[tasks]") {
  std::vector<int> hits(200, 0);
  std::set<std::thread::id> threads;
  std::mutex m;
  parallel_tasks(200, [&](int64_t i) {
    ++hits[static_cast<size_t>(i)];
    std::lock_guard<std::mutex> lock(m);
    threads.insert(std::this_thread::get_id());
  });
  for (int h : hits) CHECK(h == 1);
  CHECK(!threads.empty());
  parallel_tasks(0, [](int64_t) { FAIL("no task to run"); });
  CHECK_THROWS_WITH(parallel_tasks(50, [](int64_t i) {
                      if (i == 17) throw std::runtime_error("frame 17 failed");
                    }),
                    "frame 17 failed");
}
