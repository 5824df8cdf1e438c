#pragma once
// A config's keys read into the fields of its struct, one line a key:
//
//   const io::JsonFields read(j, where);
//   read("patch_size", c.patch_size);  // c.patch_size = json_get(j, "patch_size", c.patch_size, where)
//
// An absent or null key keeps the field's default; the value is checked as json_get checks it (type,
// range, finiteness), with errors naming `where` (the file) and the key.
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "lib/io/json.h"

namespace ditgen::io {

class JsonFields {
 public:
  JsonFields(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {}

  template <typename T>
  void operator()(const std::string& key, T& field) const {
    field = json_get<T>(j_, key, field, where_);
  }

 private:
  const nlohmann::json& j_;
  std::string where_;
};

}  // namespace ditgen::io
