#pragma once
// LTX2VideoTransformer3DModel (docs/reference/ltx2.md §1): 48 blocks over two streams, video [B, Nv, D]
// and audio [B, Na, Da], each with self-attention, text cross-attention and a GELU-tanh MLP, plus the
// audio-to-video and video-to-audio cross attention; six AdaLN-single timestep embeddings; RoPE from
// physical coordinates (seconds and pixels) in the "split" or "interleaved" layout. Parameter names
// equal the diffusers checkpoint keys. Under context parallelism the video and the audio tokens are each
// split over the CP group (the text stays whole: it is only ever keys); under tensor parallelism every
// attention holds heads / tp and every MLP its slice (cache-dit-semantics.md §2.4).
#include <ATen/ATen.h>

#include <array>
#include <memory>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lib/cache/dbcache.h"
#include "lib/nn/graphs.h"
#include "lib/nn/weights.h"
#include "lib/parallel/context.h"
#include "models/ltx2/layers.h"

namespace ditgen::ltx2 {

struct TransformerConfig {
  int64_t in_channels = 128, out_channels = 128;
  int64_t num_attention_heads = 32, attention_head_dim = 128;
  int64_t cross_attention_dim = 4096;
  int64_t audio_in_channels = 128, audio_out_channels = 128;
  int64_t audio_num_attention_heads = 32, audio_attention_head_dim = 64;
  int64_t audio_cross_attention_dim = 2048;  // also the RoPE width of the audio<->video attention (§1.1)
  int64_t num_layers = 48;
  int64_t caption_channels = 3840;
  std::vector<int64_t> vae_scale_factors = {8, 32, 32};  // (time, height, width) pixels per latent cell
  double pos_embed_max_pos = 20, audio_pos_embed_max_pos = 20;
  double base_height = 2048, base_width = 2048;
  int64_t audio_scale_factor = 4;  // mel frames per audio latent frame
  double audio_sampling_rate = 16000, audio_hop_length = 160;
  int64_t causal_offset = 1;
  double timestep_scale_multiplier = 1000, cross_attn_timestep_scale_multiplier = 1000;
  double rope_theta = 10000;
  bool rope_double_precision = true;
  bool rope_split = true;  // rope_type "split" (the real config); false: "interleaved" (the code default)
  double norm_eps = 1e-6;

  int64_t inner_dim() const { return num_attention_heads * attention_head_dim; }
  int64_t audio_inner_dim() const { return audio_num_attention_heads * audio_attention_head_dim; }

  // Refuses LTX-2.3+ features (gated attention, prompt AdaLN, perturbed attention, ...) and
  // inconsistent widths, naming the key.
  static TransformerConfig from_json(const nlohmann::json& j, const std::string& where);
};

// Inputs of one forward.
struct TransformerInput {
  at::Tensor hidden_states;                // [B, Nv, in_channels] packed video latents, tokens (f, h, w)
  at::Tensor audio_hidden_states;          // [B, Na, audio_in_channels] packed audio latents
  at::Tensor encoder_hidden_states;        // [B, Lt, caption_channels] video text context (connectors)
  at::Tensor audio_encoder_hidden_states;  // [B, Lt, caption_channels] audio text context
  at::Tensor encoder_mask;                 // [B, Lt] (1 = real) or undefined: every token real
  // sigma * 1000: [B], or [B, Nv] per video token (image-to-video: the conditioned tokens' is 0)
  at::Tensor timestep;
  at::Tensor audio_timestep;               // [B] or undefined: the video timestep (which must be [B] then)
  int64_t frames = 0, height = 0, width = 0;  // the latent grid, Nv = frames * height * width
  double fps = 24;
};

class Transformer {
 public:
  // `fp8`: the blocks' linears as e4m3 with per-channel scales (lib/nn/linear.h), quantised as they are read.
  // `offload` (--offload): the blocks kept in host memory by it, each moved there as it loads (lib/nn/offload.h).
  Transformer(const TransformerConfig& config, const nn::Weights& wb, std::shared_ptr<parallel::Context> ctx,
              bool fp8 = false, std::shared_ptr<nn::BlockStreamer> offload = nullptr);

  struct Output {
    at::Tensor video;  // [B, Nv, out_channels]
    at::Tensor audio;  // [B, Na, audio_out_channels]
  };
  // With a `cache`, the block list runs through DBCache (video and audio together) with the state of CFG
  // branch `branch`.
  Output forward(const TransformerInput& in, cache::Cache* cache = nullptr, int branch = 0) const;

  const TransformerConfig& config() const { return cfg_; }
  int64_t graphs_captured() const { return graphs_.captured(); }  // CUDA graphs of the blocks (for the tests)

  // The rotary tables of a generation (positions fixed, so computed once): this rank's tokens.
  struct Ropes {
    Rope video, audio, cross_video, cross_audio;
  };
  Ropes ropes(int64_t frames, int64_t height, int64_t width, double fps, int64_t audio_frames) const;

 private:
  // The last generation's tables, kept on the device: every step of a generation asks for the same ones,
  // and rebuilding them on the host cost ~30 ms of host-to-device copies a step at the default video.
  struct RopeKey {
    int64_t frames = -1, height = -1, width = -1, audio_frames = -1;
    double fps = 0;
    bool operator==(const RopeKey& o) const {
      return frames == o.frames && height == o.height && width == o.width && audio_frames == o.audio_frames &&
             fps == o.fps;
    }
  };
  mutable RopeKey rope_key_;
  mutable std::shared_ptr<const Ropes> rope_cache_;

  struct AdaLN {  // AdaLN-single: timestep embedder + modulation linear
    Linear t1, t2, mod;
  };
  struct Block {
    Attention attn1, audio_attn1, attn2, audio_attn2, a2v, v2a;
    FeedForward ff, audio_ff;
    template <class F>
    void tensors(F&& f) {
      nn::each_tensor(f, attn1, audio_attn1, attn2, audio_attn2, a2v, v2a, ff, audio_ff);
    }
  };
  // Every block's modulation tables stacked (on the device, also with --offload: 6.5 MB at real size), so
  // that a forward adds the embedded timestep to all of them at once.
  struct Tables {
    at::Tensor video, audio, video_av, audio_av;  // [L, 6, D], [L, 6, Da], [L, 5, D], [L, 5, Da]
  };
  Tables tables_;

  // Every block's text keys and values (video and audio cross-attention) for one pair of text contexts: the
  // text does not change over the denoising steps, so they are projected once per prompt instead of once per
  // step. One slot per CFG branch; the inputs are held, so a slot matches only the very same tensors,
  // unchanged since (their version). A new prompt's keys of the same shapes are copied into the slot's
  // tensors: the CUDA graphs, which read them at their addresses, then serve every prompt of that length.
  struct TextCache {
    at::Tensor video_source, audio_source, mask;
    int64_t video_version = -1, audio_version = -1;
    std::vector<TextKeys> video, audio;  // per block
    bool holds(const TransformerInput& in) const;
    std::vector<at::Tensor> tensors() const;
  };
  std::pair<TextContext, TextContext> text_contexts(const TransformerInput& in, at::ScalarType dt,
                                                    const at::Device& dev) const;
  // The slot of `branch` for `in`, built when it does not hold it; nullptr when the keys are not kept (they
  // would take more than a quarter of what this rank may still allocate: a tight card or --gpu-memory-limit),
  // and then `contexts` holds the text contexts for the blocks to project in every step.
  const TextCache* text_cache(const TransformerInput& in, int branch, at::ScalarType dt, const at::Device& dev,
                              std::pair<TextContext, TextContext>& contexts) const;
  mutable std::array<TextCache, 2> text_caches_;  // per CFG branch (conditional, unconditional)

  AdaLN adaln(const nn::Weights& wb, const std::string& name, int64_t width, int64_t n) const;
  // (modulation [B, T, n*W], embedded timestep [B, T, W]) for timestep t [B] (T = 1) or [B, T] per token.
  std::pair<at::Tensor, at::Tensor> embed(const AdaLN& a, const at::Tensor& t, at::ScalarType dt) const;
  at::Tensor attend(const Attention& a, const at::Tensor& x, const at::Tensor& kv, const Rope* q_rope,
                    const Rope* k_rope, Keys keys, int64_t kv_full) const;

  TransformerConfig cfg_;
  std::shared_ptr<parallel::Context> ctx_;
  Linear proj_in_, audio_proj_in_, proj_out_, audio_proj_out_;
  Linear caption1_, caption2_, audio_caption1_, audio_caption2_;
  AdaLN time_, audio_time_, av_video_ss_, av_audio_ss_, av_video_gate_, av_audio_gate_;
  at::Tensor scale_shift_table_, audio_scale_shift_table_;  // [2, D], [2, Da]
  nn::BlockList<Block> blocks_;  // resident, or streamed (--offload)
  nn::BlockGraphs graphs_;       // the blocks of a step as one CUDA graph
};

// Physical RoPE coordinates (§1.8), normalised to [0, 1]-ish grids: video [F*H*W, 3] (time, y, x) and its
// time axis alone [F*H*W, 1]; audio [Na, 1].
at::Tensor video_grid(const TransformerConfig& c, int64_t frames, int64_t height, int64_t width, double fps);
at::Tensor audio_grid(const TransformerConfig& c, int64_t audio_frames, double max_pos);

}  // namespace ditgen::ltx2
