#pragma once
// LTX2TextConnectors (docs/reference/ltx2.md §3, §10.4): the stacked Gemma 3 hidden states are normalised
// per sample and layer over the real tokens, projected by `text_proj_in`, and run through two small
// transformers (video and audio) whose padding rows are replaced by learnable registers. Every rank runs
// them whole (they are part of the text side).
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>

#include "lib/nn/weights.h"
#include "models/ltx2/layers.h"

namespace ditgen::ltx2 {

struct ConnectorsConfig {
  int64_t caption_channels = 3840;
  int64_t text_proj_in_factor = 49;  // Gemma layers + 1 (the embeddings)
  struct Branch {
    int64_t heads = 30, head_dim = 128, layers = 2, registers = 128;
  } video, audio;
  double rope_base_seq_len = 4096;
  RopeSettings rope;  // theta 1e4, double precision, split

  // Refuses LTX-2.3+ connector features (per-modality projections, projection bias) naming the key.
  static ConnectorsConfig from_json(const nlohmann::json& j, const std::string& where);
};

class Connectors {
 public:
  Connectors(const ConnectorsConfig& config, const nn::Weights& wb);

  struct Output {
    at::Tensor video, audio;  // [B, L, caption_channels] each
    at::Tensor mask;          // [B, L] int64, all ones (registers fill the padding)
  };
  // states [B, L, caption_channels * text_proj_in_factor] (feature d * factor + layer), mask [B, L]
  // (1 = real token, left padded).
  Output forward(const at::Tensor& states, const at::Tensor& mask) const;

  const ConnectorsConfig& config() const { return cfg_; }

 private:
  struct Block {
    Attention attn;
    FeedForward ff;
  };
  struct Branch {
    at::Tensor registers;  // [R, C]
    std::vector<Block> blocks;
    int64_t heads = 0;
  };
  Branch load_branch(const nn::Weights& wb, const ConnectorsConfig::Branch& b) const;
  at::Tensor run(const Branch& b, const at::Tensor& p, const at::Tensor& lengths) const;

  ConnectorsConfig cfg_;
  at::Tensor text_proj_in_;  // [C, C * factor], no bias
  Branch video_, audio_;
};

}  // namespace ditgen::ltx2
