#pragma once
// JSON file helpers whose errors name the file and the key. Every JSON text ditgen reads (configs,
// indexes, presets, prompt-file lines, safetensors headers) goes through parse_json: nesting deeper than
// kMaxJsonDepth, a key given twice in one object and numbers beyond a double's range are refused before
// anything is built, in time linear in the text's size.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "lib/runtime/error.h"

namespace ditgen::io {

constexpr int kMaxJsonDepth = 64;                    // nested objects and arrays; real configs use < 10
constexpr uint64_t kMaxJsonFileBytes = 64ull << 20;  // a JSON file's size (an index of 100k tensors is ~10 MB)

// The whole message for a key repeated in one object: the keys and "[i]" indices leading to that object
// (empty at the top level) and the key. Lets a caller word it in its own terms ("tensor 'x' is listed twice").
using DuplicateKeyText = std::function<std::string(const std::vector<std::string>& parents, const std::string& key)>;

// Parses `text` strictly (see above); `what` names the source in errors ("'dir/config.json'",
// "--prompt-file p.jsonl line 3").
nlohmann::json parse_json(const std::string& text, const std::string& what,
                          const DuplicateKeyText& duplicate_text = nullptr);
// A regular file's bytes, refused (naming `what`, or the path) when it is a FIFO, folder or device, or
// larger than `max_bytes`.
std::string read_text_file(const std::string& path, uint64_t max_bytes, const std::string& what = "");
// read_text_file (kMaxJsonFileBytes) + parse_json, naming the file.
nlohmann::json read_json_file(const std::string& path);
// A value quoted in a message: at most 60 characters, printable.
std::string json_excerpt(const nlohmann::json& v);

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
    DITGEN_CHECK(v.is_array(), "{}: key '{}' must be a list, got {}", where, key, json_excerpt(v));
    for (size_t i = 0; i < v.size(); ++i) check_kind<typename T::value_type>(v[i], where, key + "[" + std::to_string(i) + "]");
  } else if constexpr (std::is_same_v<T, bool>) {
    DITGEN_CHECK(v.is_boolean(), "{}: key '{}' must be true or false, got {}", where, key, json_excerpt(v));
  } else if constexpr (std::is_integral_v<T>) {
    DITGEN_CHECK(v.is_number_integer(), "{}: key '{}' must be an integer, got {}", where, key, json_excerpt(v));
    if constexpr (std::is_unsigned_v<T>) {
      DITGEN_CHECK(v.is_number_unsigned(), "{}: key '{}' must not be negative, got {}", where, key, json_excerpt(v));
      DITGEN_CHECK(v.get<uint64_t>() <= std::numeric_limits<T>::max(), "{}: key '{}' is too large, got {}", where,
                   key, json_excerpt(v));
    } else {
      // int: a value past its range would wrap silently.
      const bool fits = v.is_number_unsigned()
                            ? v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())
                            : v.get<int64_t>() >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                                  v.get<int64_t>() <= static_cast<int64_t>(std::numeric_limits<T>::max());
      DITGEN_CHECK(fits, "{}: key '{}' is out of range, got {}", where, key, json_excerpt(v));
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    DITGEN_CHECK(v.is_number(), "{}: key '{}' must be a number, got {}", where, key, json_excerpt(v));
    DITGEN_CHECK(std::isfinite(v.get<double>()), "{}: key '{}' must be a finite number, got {}", where, key,
                 json_excerpt(v));
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
