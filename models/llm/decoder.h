#pragma once
// The decoder-only LLM text encoders (Mistral 3 / Mistral-Small, Qwen2 / Qwen2.5-VL text model, Gemma 3
// text model) as one family with switches. Only the hidden states are computed: no lm_head, no KV
// cache. Reference facts: docs/reference/flux2.md §4.3-4.4 and §10.7 (Mistral), qwen-image.md §4.4
// (Qwen2.5-VL), ltx2.md §2 and §10.8 (Gemma 3).
//
//   auto store = io::TensorStore::open_dir(".../text_encoder");
//   auto cfg = llm::DecoderConfig::from_json(io::read_json_file(cfg_path), cfg_path);
//   auto source = llm::open_decoder_source(store, cfg, /*num_layers_needed=*/30);
//   llm::DecoderLM lm(cfg, nn::Weights(source, at::kBFloat16, device), 30);
//   source->check_all_used();
//   auto hs = lm.forward(ids, mask, {10, 20, 30});   // 3 x [B, L, hidden]
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lib/io/checkpoint.h"
#include "lib/nn/offload.h"
#include "lib/nn/weights.h"

namespace ditgen::parallel {
class Context;
}

namespace ditgen::llm {

enum class DecoderFamily { Mistral, Qwen2, Gemma3 };

const char* family_name(DecoderFamily f);
// "mistral" / "qwen2" / "gemma3" and the HF model_type spellings (mistral3, qwen2_5_vl, gemma3_text, ...);
// std::nullopt when the name is none of them.
std::optional<DecoderFamily> family_from_name(const std::string& name);

enum class Activation { Silu, GeluTanh, Gelu };

struct RopeParams {
  double theta = 10000.0;
  double linear_factor = 1.0;  // rope_type "linear": inverse frequencies divided by this
};

struct DecoderConfig {
  DecoderFamily family = DecoderFamily::Mistral;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // explicit in Mistral-Small (128 != 5120/32)
  double rms_norm_eps = 1e-6;
  Activation hidden_act = Activation::Silu;
  bool qkv_bias = false;  // Qwen2: q/k/v projections carry biases

  RopeParams rope_global;  // full-attention layers
  RopeParams rope_local;   // sliding-window layers (Gemma 3: rope_local_base_freq)

  int64_t sliding_window = 0;          // 0: no sliding-window layers
  std::vector<bool> layer_is_sliding;  // one per layer

  // Gemma 3 switches.
  bool scale_embeddings = false;     // embed * sqrt(hidden), the scale cast to the weight dtype first
  bool offset_norms = false;         // RMSNorm weight is (1 + w), product taken in fp32
  bool sandwich_norms = false;       // post_attention / pre_ and post_feedforward norms around each sublayer
  bool qk_norm = false;              // per-head q_norm / k_norm before RoPE
  double query_pre_attn_scalar = 0;  // attention scale = this^-0.5 (0: head_dim)

  // The longest sequence the encoder was trained on (max_position_embeddings; 0: the config does not say).
  // forward() refuses longer inputs instead of running RoPE past what the weights know.
  int64_t max_position_embeddings = 0;
  std::string source;  // the config file, for messages

  // Reads a plain text config or a wrapper with `text_config` (Mistral3ForConditionalGeneration,
  // Qwen2.5-VL, Gemma3ForConditionalGeneration); a key missing from `text_config` is looked up at the
  // top level (older Qwen2.5-VL configs keep everything there). The family comes from `model_type`, else
  // from `family`, else from the keys (mrope_section: Qwen2.5-VL; query_pre_attn_scalar: Gemma 3; else
  // Mistral). `where` names the file in errors.
  static DecoderConfig from_json(const nlohmann::json& j, const std::string& where,
                                 std::optional<DecoderFamily> family = std::nullopt);

  double attention_scale() const;  // 1/sqrt(query_pre_attn_scalar or head_dim)
};

// The prefix under which `embed_tokens.weight` lives: one of "", "model.", "language_model.model.",
// "model.language_model." (the checkpoint generations of plain, Qwen2.5-VL legacy, Mistral3/Gemma3
// legacy and new transformers layouts). Throws, listing what was tried, when none or several match.
std::string detect_decoder_root(const io::TensorStore& store);

// Full-key prefixes a text-encoder checkpoint may hold that we deliberately do not load: vision tower,
// multi-modal projector, lm_head, rotary buffers, and (under `root`) layers >= num_layers_loaded and the
// final norm when it is not loaded. For CheckpointSource's ignore list.
std::vector<std::string> decoder_ignore_prefixes(const std::string& root, const DecoderConfig& cfg,
                                                 int num_layers_loaded);

// detect_decoder_root + decoder_ignore_prefixes in one CheckpointSource.
std::shared_ptr<nn::CheckpointSource> open_decoder_source(std::shared_ptr<io::TensorStore> store,
                                                          const DecoderConfig& cfg, int num_layers_loaded);

// TE-P (--parallel-text; DESIGN §6, cache-dit-semantics.md §4.1): Megatron-style tensor parallelism of the
// decoder over any number of ranks N. Every split is contiguous and as even as possible (comm::split_sizes:
// the first n % N ranks get one more), so no rank count is refused:
//   - query heads: rank r holds heads [head0, head0 + heads) of q_proj (column-parallel) and the matching
//     input columns of o_proj (row-parallel); N not dividing the heads gives uneven shares (32 heads on 3
//     ranks: 11 + 11 + 10), N above the heads leaves some ranks with none (they add zeros to the sum);
//   - KV heads: each rank holds the KV heads its query heads read, [kv0, kv0 + kv_heads) of k_proj/v_proj.
//     A KV head whose query group spans two ranks is held by both (replicated), which is how more ranks
//     than KV heads work (the reference tool's reshape breaks there);
//   - MLP: the intermediate features split the same way (gate/up column-, down row-parallel);
//   - embeddings: vocabulary-sharded (rank r holds rows [vocab0, vocab0 + vocab), looks up the ids it holds,
//     zeros elsewhere, one all-reduce: exact, since every sum has one non-zero term);
//   - norms (input, post-attention, Gemma's sandwich, q/k and final) replicated.
// All-reduces: one after the embedding lookup, then two per layer (after o_proj and after down_proj).
struct TpSlices {
  int64_t head0 = 0, heads = 0;    // query heads
  int64_t kv0 = 0, kv_heads = 0;   // KV heads
  int64_t ff0 = 0, ff = 0;         // MLP intermediate features
  int64_t vocab0 = 0, vocab = 0;   // embedding rows
};
TpSlices tp_slices(const DecoderConfig& cfg, const nn::TpGroup& tp);
// One line for the log: how the heads, KV heads, MLP and vocabulary are split over `ranks`.
std::string describe_tp(const DecoderConfig& cfg, int ranks);

class DecoderLM {
 public:
  // Sum over the tensor-parallel group, in place; called after the embedding lookup, o_proj and
  // down_proj when tp > 1.
  using AllReduce = std::function<void(at::Tensor&)>;

  // `wb` is rooted at the decoder (names `embed_tokens.weight`, `layers.{i}...`, `norm.weight`).
  // Loads layers 0..num_layers_needed-1 (-1: all); the final norm only when all layers are loaded.
  // With wb.tp().size > 1 each rank reads only its slices (tp_slices above); every rank of the group
  // must then call forward() with the same inputs. `offload` (--offload): the layers kept in host memory by
  // it, each moved there as it loads, and streamed to the device during forward (lib/nn/offload.h).
  DecoderLM(DecoderConfig cfg, const nn::Weights& wb, int num_layers_needed = -1,
            AllReduce tp_all_reduce = nullptr, std::shared_ptr<nn::BlockStreamer> offload = nullptr);

  // input_ids [B, L] int64, attention_mask [B, L] int64 (1 = real token; undefined = all real).
  // Returns hidden_states[k] for each k in `wanted`, in that order, HF semantics: 0 = embeddings,
  // k = output of layer k (1-based), k == num_hidden_layers = after the final norm; negative k counts
  // from the end (-1 = last). Each [B, L, hidden] in wb.dtype(). Runs only the layers needed.
  std::vector<at::Tensor> forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                  const std::vector<int>& wanted) const;

  const DecoderConfig& config() const { return cfg_; }
  int num_layers_loaded() const { return static_cast<int>(layers_.size()); }

 private:
  struct Layer {
    at::Tensor input_norm, post_attn_norm, pre_ff_norm, post_ff_norm;  // pre_ff/post_ff: Gemma 3 only
    at::Tensor q, k, v, o;                                             // [out, in] local shards
    std::optional<at::Tensor> q_bias, k_bias, v_bias;
    at::Tensor q_norm, k_norm;  // [head_dim], Gemma 3 only
    at::Tensor gate, up, down;
    template <class F>
    void tensors(F&& f) {
      nn::each_tensor(f, input_norm, post_attn_norm, pre_ff_norm, post_ff_norm, q, k, v, o, q_bias, k_bias, v_bias,
                      q_norm, k_norm, gate, up, down);
    }
  };

  at::Tensor norm(const at::Tensor& x, const at::Tensor& w) const;
  at::Tensor layer_forward(const Layer& l, const at::Tensor& x, const at::Tensor& mask, const at::Tensor& cos,
                           const at::Tensor& sin) const;
  void reduce(at::Tensor& t) const;
  at::Tensor embed(const at::Tensor& ids) const;  // [B, L] -> [B, L, hidden], summed over TE-P ranks

  DecoderConfig cfg_;
  at::ScalarType dtype_;
  at::Device device_;
  int tp_size_ = 1;
  TpSlices slices_;
  at::Tensor kv_index_;  // [heads] local KV head of each local query head; undefined: plain grouped layout
  AllReduce all_reduce_;
  at::Tensor embed_;
  nn::BlockList<Layer> layers_;  // resident, or streamed (--offload)
  std::optional<at::Tensor> final_norm_;
};

// A pipeline's text encoder: replicated, or with `parallel_text` (--parallel-text) and more than one rank
// tensor-parallel over ctx's text-encoder group (parallel::Context::text_tp: every rank), each rank
// reading only its slices of `wb`'s source. Logs the split (describe_tp) on rank 0. `offload`: as DecoderLM's.
std::unique_ptr<DecoderLM> load_decoder(const DecoderConfig& cfg, const nn::Weights& wb, int num_layers_needed,
                                        const std::shared_ptr<parallel::Context>& ctx, bool parallel_text,
                                        std::shared_ptr<nn::BlockStreamer> offload = nullptr);

}  // namespace ditgen::llm
