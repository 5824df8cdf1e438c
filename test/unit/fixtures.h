#pragma once
// Fixture folders for unit tests. A missing folder ends the test's process with exit code 77, which
// CTest reports as skipped (catch_discover_tests runs every TEST_CASE as its own entry with
// SKIP_RETURN_CODE 77): a test that could not run never counts as passed.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "lib/io/json.h"

inline std::string fixture_dir(const std::string& relative) {
  const std::string dir = std::string(DITGEN_FIXTURES) + "/" + relative;
  if (!ditgen::io::dir_exists(dir)) {
    std::printf("SKIP: fixture folder %s not found\n", dir.c_str());
    std::fflush(stdout);
    std::exit(77);
  }
  return dir;
}
