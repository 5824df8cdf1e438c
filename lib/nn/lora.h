#pragma once
// LoRA adapters merged into the weights as they load (DESIGN §11): a decorator on a component's weight
// source. Asked for a slice of W (a tensor-parallel rank's rows or columns, fused projections as several
// ranges), it returns
//   W_slice + sum_i s_i * B_i[rows] @ A_i                 (rows = the slice's ranges: column-parallel)
//   W_slice + sum_i s_i * B_i @ A_i[:, cols]              (cols = the slice's ranges: row-parallel)
// in float32, then the model dtype, so every mesh merges exactly its own slice and the FP8 quantiser
// (--fp8) sees merged weights. s_i = (the --lora SCALE) x alpha / rank. Only the slice's rows of B (or
// columns of A) are read from the LoRA file.
//
// Layouts read (the conversions of diffusers' lora_state_dict for each model, lora_conversion_utils.py):
// - every model: diffusers / PEFT, `transformer.<module>.lora_A.weight` [r, in] and `.lora_B.weight`
//   [out, r]; `lora_down` / `lora_up` are read as A / B; an optional `<module>.alpha` gives the scale
//   alpha / r (no alpha: 1), and so does the `lora_adapter_metadata` entry diffusers writes (lora_alpha,
//   r, alpha_pattern, rank_pattern, use_rslora); PEFT's `.lora_A.default.weight` names are read too.
// - FLUX.2: kohya `lora_unet_<BFL module, '_' for '.'>.lora_down/lora_up/alpha` (diffusers'
//   _convert_kohya_flux2_lora_to_diffusers: `double_blocks_N_img_attn_qkv` split into to_q/to_k/to_v by
//   rows of B, ..., `single_blocks_N_linear1` -> the fused to_qkv_mlp_proj); the BFL / ai-toolkit names
//   under `diffusion_model.` (or PEFT's `base_model.model.`), `double_blocks.N.img_attn.qkv`, ...
//   (_convert_non_diffusers_flux2_lora_to_diffusers), diffusers block names under that prefix included.
// - Qwen-Image: `diffusion_model.<module>` and kohya `lora_unet_<module with '_'>` (diffusers'
//   _convert_non_diffusers_qwen_lora_to_diffusers: its table of top-level modules and its protected
//   n-grams such as `to_q`, `add_q_proj`, `img_mlp`).
// - LTX-2: the original names under `diffusion_model.` (_convert_non_diffusers_ltx2_lora_to_diffusers:
//   `patchify_proj` -> `proj_in`, `adaln_single` -> `time_embed`, ...) and `text_embedding_projection.`
//   for the text connectors (`connectors.` in the diffusers layout).
// Where ditgen differs from upstream, on purpose: `.alpha` is honoured in every layout (diffusers drops
// it next to lora_A/lora_B for Qwen-Image and refuses it for FLUX.2); kohya keys that match no module are
// refused (diffusers warns and drops them); FLUX.2's BFL `final_layer.adaLN_modulation.1` gets B's two
// halves swapped, as diffusers' checkpoint conversion swaps the base weight's (scale, shift) halves; DoRA
// and LoRA biases are refused (diffusers drops dora_scale with a warning).
//
// Refused, naming the file and the key: a key that is no LoRA tensor, a module that matches no layer of
// the model, A/B whose shapes do not fit the layer, text-encoder keys, and a file for another model
// (its keys match no layer).
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "lib/io/safetensors.h"
#include "lib/nn/weights.h"

namespace ditgen::nn {

// One --lora FILE[:SCALE].
struct LoraFile {
  std::string path;
  double scale = 1.0;
};

// "FILE[:SCALE]": the text after the last ':' is the scale when it reads as a number, else part of the
// path. A bad scale (not a finite number) or a missing file is refused naming `flag`.
LoraFile parse_lora_flag(const std::string& value, const std::string& flag = "--lora");
// The same check for a CLI validator: "" when `value` is good, else why not (without the flag's name).
std::string lora_flag_error(const std::string& value);

// Which model's key layouts a LoRA file is read in: the model command ("flux2", "qwen-image", "ltx2").
enum class LoraModel { Flux2, QwenImage, Ltx2 };
LoraModel lora_model(const std::string& command);
std::string to_string(LoraModel m);

// One low-rank term of one weight: W[rows] += scale * B[b_rows] @ A.
struct LoraTerm {
  std::shared_ptr<io::SafetensorsFile> file;
  std::string a_key, b_key;                            // as stored in the file
  std::vector<std::pair<int64_t, int64_t>> b_rows;     // ranges of B's rows, in order, giving the layer's rows
  double scale = 1.0;                                  // --lora SCALE x alpha / rank
  std::string module;                                  // the file's name of the module, for messages
};

// LoRA files read and converted to the model's weight names, per component ("transformer",
// "connectors"): weight key ("transformer_blocks.0.attn.to_q.weight") -> its terms in --lora order.
class LoraSet {
 public:
  LoraSet(const std::vector<LoraFile>& files, LoraModel model);

  using Terms = std::map<std::string, std::vector<LoraTerm>>;
  const std::map<std::string, Terms>& components() const { return components_; }
  const Terms* component(const std::string& name) const;

  // Per file, for the run report: path, scale and the number of layers it changes.
  struct FileSummary {
    std::string path;
    double scale;
    int64_t layers;
  };
  const std::vector<FileSummary>& summary() const { return summary_; }
  LoraModel model() const { return model_; }

 private:
  LoraModel model_;
  std::map<std::string, Terms> components_;
  std::vector<FileSummary> summary_;
};

// The decorator: merges the terms of `component` of `set` into the weights `inner` hands out.
class LoraSource : public WrappedSource {
 public:
  LoraSource(std::shared_ptr<WeightSource> inner, std::shared_ptr<const LoraSet> set, std::string component);
  at::Tensor load(const std::string& key, const std::vector<int64_t>& full_shape, const io::Slice& slice,
                  at::ScalarType dtype, const at::Device& device, Init init) override;
  // A weight a LoRA changes is never handed over in its stored FP8 form: it is merged, then quantised.
  std::optional<Fp8Weight> load_fp8(const std::string& key, const std::vector<int64_t>& full_shape,
                                    const io::Slice& slice, const at::Device& device) override;
  // The inner source's check, then: every LoRA module matched a layer that was loaded.
  void check_all_used() const override;
  std::string describe() const override;

 private:
  std::shared_ptr<const LoraSet> set_;
  std::string component_;
  const LoraSet::Terms* terms_;  // in set_; null when no LoRA touches this component
  std::set<std::string> merged_;
};

// The LoadOptions::wrap_source hook of a run with --lora: `previous` (if any) wraps first, then each
// component the LoRA files change gets a LoraSource. The components a set holds are those of its model
// that every pipeline of that model wraps ("transformer"; LTX-2 also "connectors").
using WrapSource = std::function<std::shared_ptr<WeightSource>(const std::string&, std::shared_ptr<WeightSource>)>;
WrapSource lora_wrapper(std::shared_ptr<const LoraSet> set, WrapSource previous = nullptr);

}  // namespace ditgen::nn
