#pragma once
// JSON file helpers whose errors name the file and the key.
#include <nlohmann/json.hpp>
#include <string>

#include "lib/runtime/error.h"

namespace ditgen::io {

nlohmann::json read_json_file(const std::string& path);
nlohmann::json parse_json(const std::string& text, const std::string& what);

// Value of `key` in `j` (read from `where`), or `fallback` when absent or null.
template <typename T>
T json_get(const nlohmann::json& j, const std::string& key, const T& fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: key '{}' has the wrong type ({})", where, key, e.what());
  }
}

// Value of a required `key`.
template <typename T>
T json_require(const nlohmann::json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  DITGEN_CHECK(it != j.end() && !it->is_null(), "{}: required key '{}' is missing", where, key);
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: key '{}' has the wrong type ({})", where, key, e.what());
  }
}

bool file_exists(const std::string& path);
bool dir_exists(const std::string& path);
std::string join_path(const std::string& a, const std::string& b);

}  // namespace ditgen::io
