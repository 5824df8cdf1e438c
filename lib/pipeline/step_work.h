#pragma once
// The transformer work of one denoising step (issue 10, benchmark sweeps): matmul and attention FLOPs of
// the whole job (every CFG branch, the whole batch, not per rank) and the shapes that carry most of them,
// which the floor probe (bench/bench_floor.cpp) measures. Each model counts its own layers with a
// WorkCounter; the runner writes the result into the report as "work_per_step".
#include <array>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>

namespace ditgen::pipeline {

struct StepWork {
  double matmul_flop = 0;     // 2 M K N of every linear
  double attention_flop = 0;  // 4 Sq Sk D per head and batch item (Q K^T and P V)
  std::array<int64_t, 3> gemm_shape{};       // [M, K, N] of the GEMM shape carrying the most FLOPs
  std::array<int64_t, 4> attention_shape{};  // [B, H, S, D] of the attention carrying the most FLOPs
  int64_t attention_keys = 0;                // its key length when it differs from S (cross attention), else 0

  bool empty() const { return matmul_flop == 0 && attention_flop == 0; }
  nlohmann::json to_json() const;
};

// Adds up linears and attentions; the dominant shapes are those with the most FLOPs in total.
class WorkCounter {
 public:
  // `count` products [m, k] x [k, n] (m = tokens of the whole batch).
  void linear(int64_t m, int64_t k, int64_t n, double count = 1);
  // `count` attentions of `b` batch items x `h` heads, `sq` queries against `sk` keys of width `d`.
  void attention(int64_t b, int64_t h, int64_t sq, int64_t sk, int64_t d, double count = 1);
  // The totals and the dominant shapes.
  StepWork result() const;
  // Adds another counter's work (e.g. the unconditional branch with its own text length).
  void add(const WorkCounter& other);

 private:
  std::map<std::array<int64_t, 3>, double> gemms_;
  std::map<std::array<int64_t, 5>, double> attentions_;  // b, h, sq, sk, d
};

}  // namespace ditgen::pipeline
