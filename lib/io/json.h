#pragma once
// JSON file helpers whose errors name the file and the key.
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "lib/runtime/error.h"

namespace ditgen::io {

nlohmann::json read_json_file(const std::string& path);
nlohmann::json parse_json(const std::string& text, const std::string& what);

namespace detail {

template <typename T>
struct is_vector : std::false_type {};
template <typename T>
struct is_vector<std::vector<T>> : std::true_type {};

// nlohmann converts 2.5 to the integer 2, true to 1 and -1 to a huge unsigned value without a word:
// a config's counts must be integers, its numbers numbers.
template <typename T>
void check_kind(const nlohmann::json& v, const std::string& where, const std::string& key) {
  if constexpr (is_vector<T>::value) {
    DITGEN_CHECK(v.is_array(), "{}: key '{}' must be a list, got {}", where, key, v.dump());
    for (size_t i = 0; i < v.size(); ++i) check_kind<typename T::value_type>(v[i], where, key + "[" + std::to_string(i) + "]");
  } else if constexpr (std::is_same_v<T, bool>) {
    DITGEN_CHECK(v.is_boolean(), "{}: key '{}' must be true or false, got {}", where, key, v.dump());
  } else if constexpr (std::is_integral_v<T>) {
    DITGEN_CHECK(v.is_number_integer(), "{}: key '{}' must be an integer, got {}", where, key, v.dump());
    if constexpr (std::is_unsigned_v<T>)
      DITGEN_CHECK(v.is_number_unsigned(), "{}: key '{}' must not be negative, got {}", where, key, v.dump());
  } else if constexpr (std::is_floating_point_v<T>) {
    DITGEN_CHECK(v.is_number(), "{}: key '{}' must be a number, got {}", where, key, v.dump());
  }
}

}  // namespace detail

// Value of `key` in `j` (read from `where`), or `fallback` when absent or null. Integers must be
// integers (2.0 and 2.5 are refused), booleans booleans.
template <typename T>
T json_get(const nlohmann::json& j, const std::string& key, const T& fallback, const std::string& where) {
  DITGEN_CHECK(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  detail::check_kind<T>(*it, where, key);
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    fail("{}: key '{}' has the wrong type ({})", where, key, e.what());
  }
}

// Value of a required `key`.
template <typename T>
T json_require(const nlohmann::json& j, const std::string& key, const std::string& where) {
  DITGEN_CHECK(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());
  auto it = j.find(key);
  DITGEN_CHECK(it != j.end() && !it->is_null(), "{}: required key '{}' is missing", where, key);
  detail::check_kind<T>(*it, where, key);
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
