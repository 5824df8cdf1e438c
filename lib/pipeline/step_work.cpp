#include "lib/pipeline/step_work.h"

namespace ditgen::pipeline {

nlohmann::json StepWork::to_json() const {
  nlohmann::json j = {{"matmul_flop", matmul_flop},
                      {"attention_flop", attention_flop},
                      {"gemm_shape", gemm_shape},
                      {"attention_shape", attention_shape}};
  if (attention_keys > 0) j["attention_keys"] = attention_keys;
  return j;
}

void WorkCounter::linear(int64_t m, int64_t k, int64_t n, double count) {
  if (m <= 0 || k <= 0 || n <= 0 || count <= 0) return;
  gemms_[{m, k, n}] += count * 2.0 * static_cast<double>(m) * static_cast<double>(k) * static_cast<double>(n);
}

void WorkCounter::attention(int64_t b, int64_t h, int64_t sq, int64_t sk, int64_t d, double count) {
  if (b <= 0 || h <= 0 || sq <= 0 || sk <= 0 || d <= 0 || count <= 0) return;
  attentions_[{b, h, sq, sk, d}] += count * 4.0 * static_cast<double>(b) * static_cast<double>(h) *
                                    static_cast<double>(sq) * static_cast<double>(sk) * static_cast<double>(d);
}

void WorkCounter::add(const WorkCounter& other) {
  for (const auto& [k, v] : other.gemms_) gemms_[k] += v;
  for (const auto& [k, v] : other.attentions_) attentions_[k] += v;
}

StepWork WorkCounter::result() const {
  StepWork w;
  double best = -1;
  for (const auto& [shape, flop] : gemms_) {
    w.matmul_flop += flop;
    if (flop >= best) {  // a tie goes to the larger shape (the map is in ascending order)
      best = flop;
      w.gemm_shape = shape;
    }
  }
  best = -1;
  for (const auto& [s, flop] : attentions_) {
    w.attention_flop += flop;
    if (flop > best) {
      best = flop;
      w.attention_shape = {s[0], s[1], s[2], s[4]};
      w.attention_keys = s[3] == s[2] ? 0 : s[3];
    }
  }
  return w;
}

}  // namespace ditgen::pipeline
