#pragma once
// Tensor-name tests shared by the weight, LoRA and FP8 loaders (C++17's std::string has neither).
#include <string>

namespace ditgen::nn {

inline bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
inline bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

}  // namespace ditgen::nn
