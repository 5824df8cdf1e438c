#pragma once
// QwenImageTransformer2DModel (docs/reference/qwen-image.md §1-2): 60 double-stream MMDiT blocks with
// per-block modulation, biased projections, a GELU-tanh MLP and a 3-axis scaled RoPE (frame, height,
// width), over the joint sequence [text, image] with an optional text key mask. Parameter names equal
// the diffusers checkpoint keys. Under context parallelism each rank holds [text chunk, image chunk];
// under tensor parallelism heads / tp of every attention, its slice of every MLP and of the per-block
// modulation (cache-dit's plan, cache-dit-semantics.md §2.3).
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

namespace ditgen::qwen_image {

struct TransformerConfig {
  int64_t patch_size = 2;
  int64_t in_channels = 64;
  int64_t out_channels = 16;
  int64_t num_layers = 60;
  int64_t attention_head_dim = 128;
  int64_t num_attention_heads = 24;
  int64_t joint_attention_dim = 3584;
  std::vector<int64_t> axes_dims_rope = {16, 56, 56};
  static constexpr double kEps = 1e-6;         // every norm of the model
  static constexpr double kRopeTheta = 10000;  // QwenEmbedRope

  int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }
  int64_t mlp_hidden() const { return 4 * inner_dim(); }
  int64_t out_dim() const { return patch_size * patch_size * out_channels; }

  // Refuses the flags of other variants (Edit-2511, Layered) and guidance embedding, naming the key.
  static TransformerConfig from_json(const nlohmann::json& j, const std::string& where);
  // Fails at start-up, naming the number to change, if `tp` or `ulysses` cannot divide the heads.
  void check_mesh(const comm::Mesh& mesh) const;
};

// Inputs of one forward, full (unsplit) sequences; the model splits them over the CP group.
struct TransformerInput {
  at::Tensor hidden_states;          // [B, N_img, in_channels] packed latents
  at::Tensor encoder_hidden_states;  // [B, L, joint_attention_dim] text encoder states
  at::Tensor encoder_mask;           // [B, L] (1 = real token) or undefined: every token real
  at::Tensor timestep;               // [B] sigma in [0, 1]
  int64_t frames = 1, height = 0, width = 0;  // img_shapes[0]: the packed latent grid, N_img = f*h*w
  at::Tensor rope;                   // optional: rope(...) for these shapes, reused across steps
  // Optional: the schedule's timesteps (pipeline::model_timestep's `t`, which made `timestep`) and this forward's
  // `t` among them. The blocks' modulation vectors depend on the timestep alone: given the schedule, they are
  // computed once for all its steps (a GEMM per layer instead of two GEMVs per layer and forward, each reading
  // the layer's 2 x 6 D x D weights) and kept while the schedule stays the same.
  const std::vector<float>* schedule = nullptr;
  float t = 0.f;
};

class Transformer {
 public:
  // `fp8`: the blocks' linears as e4m3 with per-channel scales (lib/nn/linear.h), quantised as they are read.
  // `offload` (--offload): the blocks kept in host memory by it, each moved there as it loads (lib/nn/offload.h).
  Transformer(const TransformerConfig& config, const nn::Weights& wb, std::shared_ptr<parallel::Context> ctx,
              bool fp8 = false, std::shared_ptr<nn::BlockStreamer> offload = nullptr);

  // Predicted velocity [B, N_img, out_dim], gathered on every rank.
  // With a `cache`, the block list runs through DBCache with the state of CFG branch `branch`.
  at::Tensor forward(const TransformerInput& in, cache::Cache* cache = nullptr, int branch = 0) const;

  const TransformerConfig& config() const { return cfg_; }
  int64_t graphs_captured() const { return graphs_.captured(); }  // (the tests)

  // This rank's RoPE factors for its [text chunk, image chunk]: [L_loc + N_loc, head_dim/2] complex64
  // (§2). Constant over a generation, so the pipeline computes it once.
  at::Tensor rope(int64_t frames, int64_t height, int64_t width, int64_t text_len) const;

  // Pieces of forward (for the block cache): the state one forward carries between blocks.
  struct State {
    at::Tensor x, c;                  // [B, N_loc, D] image and [B, L_loc, D] text streams
    at::Tensor temb;                  // [B, D]
    at::Tensor mods;                  // [layers, 2, 6, D] (image, text) for this timestep, or undefined
    at::Tensor rope;                  // [L_loc + N_loc, head_dim/2] complex64, text first
    std::vector<int64_t> local_lens;  // joint local length of every CP chunk
    std::vector<at::Tensor> key_masks;  // per CP chunk [B, len] bool (CPU); empty: no mask
    int64_t img_full = 0;
  };
  State prepare(const TransformerInput& in) const;
  void run_blocks(State& s, int64_t begin, int64_t end) const;
  at::Tensor finish(const State& s) const;

 private:
  struct Linear {
    nn::Linear w;  // e4m3 under --fp8 (the blocks' linears)
    at::Tensor b;
    template <class F>
    void tensors(F&& f) {
      nn::each_tensor(f, w, b);
    }
  };
  struct Block {
    Linear img_mod, txt_mod;                  // column-parallel, output gathered
    Linear to_q, to_k, to_v, add_q, add_k, add_v;  // column-parallel
    Linear to_out, to_add_out;                // row-parallel
    at::Tensor norm_q, norm_k, norm_added_q, norm_added_k;
    Linear img_mlp_in, img_mlp_out, txt_mlp_in, txt_mlp_out;
    template <class F>
    void tensors(F&& f) {
      nn::each_tensor(f, img_mod, txt_mod, to_q, to_k, to_v, add_q, add_k, add_v, to_out, to_add_out, norm_q, norm_k,
                      norm_added_q, norm_added_k, img_mlp_in, img_mlp_out, txt_mlp_in, txt_mlp_out);
    }
  };
  // `fp8`: the weight as an FP8 linear (nn::load_linear: an FP8 checkpoint's e4m3 as stored, else quantised).
  Linear column(const nn::Weights& wb, const std::string& name, int64_t out, int64_t in, bool fp8 = false) const;
  Linear row(const nn::Weights& wb, const std::string& name, int64_t out, int64_t in, bool fp8 = false) const;
  at::Tensor time_embedding(const at::Tensor& timestep) const;
  // The modulation GEMM [M, 6 D], gathered over the TP group.
  at::Tensor modulation_rows(const Linear& l, const at::Tensor& silu_temb) const;
  // [S, layers, 2, 6, D]: shift, 1 + scale, gate (attention) then (MLP), of the image then the text stream.
  at::Tensor modulation_table(const std::vector<float>& schedule, at::ScalarType timestep_dtype,
                              const at::Device& dev) const;
  // Block i's (image, text) vectors, each six [B, 1, D]: from s.mods, else computed.
  std::pair<std::vector<at::Tensor>, std::vector<at::Tensor>> block_modulation(const Block& b, int64_t i,
                                                                                const State& s) const;
  void block(const Block& b, int64_t i, State& s) const;

  TransformerConfig cfg_;
  std::shared_ptr<parallel::Context> ctx_;
  int64_t heads_local_ = 0;
  Linear img_in_, txt_in_, t_lin1_, t_lin2_, norm_out_, proj_out_;
  at::Tensor txt_norm_;
  nn::BlockList<Block> blocks_;  // resident, or streamed (--offload)
  nn::BlockGraphs graphs_;       // the blocks of a step as one CUDA graph
  struct ModulationTable {
    std::vector<float> schedule;
    at::ScalarType dtype = at::kFloat;  // of the timesteps
    at::Tensor table;  // modulation_table(schedule)
  };
  mutable ModulationTable mods_;
};

// Positions of the scaled 3-axis RoPE (§2): [S, 3] (frame, row, col) for the f x h x w image grid,
// centred per axis, and (m + i) on all axes for text token i, m = max(h/2, w/2).
at::Tensor image_positions(int64_t frames, int64_t height, int64_t width);
at::Tensor text_positions(int64_t text_len, int64_t height, int64_t width);
// Complex factors [S, sum(axes)/2] for positions [S, 3]: angle = fp32(pos * inv_freq), per axis.
at::Tensor rope_factors(const at::Tensor& positions, const std::vector<int64_t>& axes, double theta);

}  // namespace ditgen::qwen_image
