#pragma once
// Flux2Transformer2DModel (docs/reference/flux2.md §1-2): 8 double-stream + 48 single-stream blocks
// with shared modulation, 4-axis interleaved RoPE and embedded guidance. Parameter names equal the
// diffusers checkpoint keys. Under context parallelism each rank holds [text chunk, image chunk]
// of the sequence; under tensor parallelism each rank holds heads / tp of every attention and its
// slice of every MLP.
#include <ATen/ATen.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lib/cache/dbcache.h"
#include "lib/nn/graphs.h"
#include "lib/nn/linear.h"
#include "lib/nn/offload.h"
#include "lib/nn/weights.h"
#include "lib/parallel/context.h"

namespace ditgen::flux2 {

struct TransformerConfig {
  int64_t patch_size = 1;
  int64_t in_channels = 128;
  int64_t out_channels = 128;
  int64_t num_layers = 8;
  int64_t num_single_layers = 48;
  int64_t attention_head_dim = 128;
  int64_t num_attention_heads = 48;
  int64_t joint_attention_dim = 15360;
  int64_t timestep_guidance_channels = 256;
  double mlp_ratio = 3.0;
  std::vector<int64_t> axes_dims_rope = {32, 32, 32, 32};
  double rope_theta = 2000.0;
  double eps = 1e-6;
  bool guidance_embeds = true;

  int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }
  int64_t mlp_hidden() const { return static_cast<int64_t>(inner_dim() * mlp_ratio); }
  int64_t out_dim() const { return patch_size * patch_size * out_channels; }

  static TransformerConfig from_json(const nlohmann::json& j, const std::string& where);
  // Fails at start-up, naming the number to change, if `tp` or `ulysses` cannot divide the heads.
  void check_mesh(const comm::Mesh& mesh) const;
};

// Inputs of one forward, full (unsplit) sequences; the model splits them over the CP group.
struct TransformerInput {
  at::Tensor hidden_states;          // [B, N_img, in_channels]
  at::Tensor encoder_hidden_states;  // [B, L, joint_attention_dim]
  at::Tensor timestep;               // [B] sigma in [0, 1]
  at::Tensor guidance;               // [B] float32 guidance scale (ignored without guidance_embeds)
  at::Tensor img_ids;                // [B or 1, N_img, 4] int64 (t, h, w, l)
  at::Tensor txt_ids;                // [B or 1, L, 4] int64
  at::Tensor rope;                   // optional: rope(img_ids, txt_ids), reused across denoising steps
};

class Transformer {
 public:
  // `fp8`: the blocks' linears as e4m3 with per-channel scales (lib/nn/linear.h), each quantised as it is
  // read, so the model-dtype copy of the blocks never exists in full. `offload` (--offload): the double-
  // then the single-stream blocks kept in host memory by it, each moved there as it loads (lib/nn/offload.h).
  Transformer(const TransformerConfig& config, const nn::Weights& wb, std::shared_ptr<parallel::Context> ctx,
              bool fp8 = false, std::shared_ptr<nn::BlockStreamer> offload = nullptr);

  // Predicted velocity [B, N_img, out_dim], gathered on every rank. With an enabled `cache`, the
  // double-stream and the single-stream list each run through DBCache with their own state for CFG
  // branch `branch` (cache-dit-semantics §5.1); without one the blocks run as they always did.
  at::Tensor forward(const TransformerInput& in, cache::Cache* cache = nullptr, int branch = 0) const;

  const TransformerConfig& config() const { return cfg_; }

  // This rank's RoPE factors for its [text chunk, image chunk]: [L_loc + N_loc, head_dim/2] complex64.
  // Constant over a generation, so the pipeline computes it once.
  at::Tensor rope(const at::Tensor& img_ids, const at::Tensor& txt_ids) const;

  // Pieces of forward, for the block cache: the state one forward carries between block lists.
  struct State {
    at::Tensor x, c;                    // [B, N_loc, D] image and [B, L_loc, D] text streams
    at::Tensor h;                       // [B, L_loc + N_loc, D] joint stream (single blocks)
    at::Tensor temb;                    // [B, D]
    // [B, 1, D] each: (shift, 1 + scale, gate) per sub-layer; the scales already carry the +1.
    std::vector<at::Tensor> mod_img, mod_txt, mod_single;
    at::Tensor rope;                    // [L_loc + N_loc, head_dim/2] complex64, text first
    std::vector<int64_t> local_lens;    // joint local length of every CP chunk
    int64_t txt_local = 0, img_full = 0;
  };
  State prepare(const TransformerInput& in) const;
  void run_double_blocks(State& s, int64_t begin, int64_t end) const;
  void join_streams(State& s) const;  // h = cat(c, x)
  void run_single_blocks(State& s, int64_t begin, int64_t end) const;
  at::Tensor finish(const State& s) const;

 private:
  struct DoubleBlock {
    nn::Linear to_q, to_k, to_v, to_out, add_q, add_k, add_v, to_add_out;
    at::Tensor norm_q, norm_k, norm_added_q, norm_added_k;
    nn::Linear ff_in, ff_out, ff_ctx_in, ff_ctx_out;
    template <class F>
    void tensors(F&& f) {
      nn::each_tensor(f, to_q, to_k, to_v, to_out, add_q, add_k, add_v, to_add_out, norm_q, norm_k, norm_added_q,
                      norm_added_k, ff_in, ff_out, ff_ctx_in, ff_ctx_out);
    }
  };
  struct SingleBlock {
    nn::Linear qkv_mlp, to_out;
    at::Tensor norm_q, norm_k;
    template <class F>
    void tensors(F&& f) {
      nn::each_tensor(f, qkv_mlp, to_out, norm_q, norm_k);
    }
  };
  at::Tensor embed_time(const at::Tensor& v, const at::Tensor& w1, const at::Tensor& w2, at::ScalarType dt) const;
  void double_block(const DoubleBlock& b, State& s) const;
  void single_block(const SingleBlock& b, State& s) const;

  TransformerConfig cfg_;
  std::shared_ptr<parallel::Context> ctx_;
  int64_t heads_local_ = 0, mlp_local_ = 0;
  at::Tensor x_embedder_, context_embedder_;
  at::Tensor t_lin1_, t_lin2_, g_lin1_, g_lin2_;
  at::Tensor mod_img_, mod_txt_, mod_single_, norm_out_, proj_out_;
  nn::BlockList<DoubleBlock> double_blocks_;  // resident, or streamed (--offload) with the single blocks
  nn::BlockList<SingleBlock> single_blocks_;
  nn::BlockGraphs graphs_;  // the blocks of a step as one CUDA graph
};

// RoPE tables for 4-axis ids [S, 4]: cos, sin [S, sum(axes)] float32, pairs repeated (§2).
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& ids, const std::vector<int64_t>& axes, double theta);

}  // namespace ditgen::flux2
