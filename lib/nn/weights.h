#pragma once
// Declared weights. A module asks for each of its tensors by checkpoint name, full shape, how it is
// divided over tensor-parallel ranks, and how a random model initialises it:
//
//   Weights wb = ...;                       // prefix "transformer_blocks.3.attn"
//   auto w = wb.get("to_q.weight", {D, D}, Shard::rows());
//
// The same declarations serve a checkpoint (only this rank's slice is read from disk) and the
// built-in random models (seeded per key, so every mesh sees the same values).
#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "lib/io/checkpoint.h"
#include "lib/runtime/progress.h"

namespace ditgen::nn {

// How a tensor is divided over the ranks of a tensor-parallel group. The dim is split into
// `segments` (consecutive lengths summing to the dim; empty = one segment), each segment is divided
// evenly, and rank r holds its piece of every segment, concatenated. Fused projections such as
// [q | k | v | gate | up] are thereby permuted per rank at load time.
struct Shard {
  int dim = -1;  // -1: replicated
  std::vector<int64_t> segments;
  // Set: this rank's piece is exactly [start, start + length) along `dim`, whatever the TP group (uneven
  // splits, pieces several ranks share, empty pieces: the text encoder under TE-P, models/llm/decoder.h).
  std::optional<std::pair<int64_t, int64_t>> range;

  static Shard replicated() { return {}; }
  static Shard rows(std::vector<int64_t> segments = {}) { return {0, std::move(segments), std::nullopt}; }  // output features
  static Shard cols(std::vector<int64_t> segments = {}) { return {1, std::move(segments), std::nullopt}; }  // input features
  static Shard piece(int dim, int64_t start, int64_t length) { return {dim, {}, std::make_pair(start, length)}; }
  bool is_replicated() const { return dim < 0; }
};

// FNV-1a of `s` from `basis`: stable across runs and platforms (seeds random weights per key).
uint64_t stable_hash(const std::string& s, uint64_t basis = 1469598103934665603ull);

// How a random model fills a tensor (ignored when reading a checkpoint).
enum class Init {
  Linear,    // N(0, 1/fan_in): keeps activations O(1) through deep stacks
  Norm,      // 1 + 0.1 N(0,1): norm scales
  Bias,      // 0.02 N(0,1)
  Embedding, // N(0,1)
  Mean,      // 0.1 N(0,1): running means
  Variance,  // 0.5 + |N(0,1)|: running variances
};

struct TpGroup {
  int rank = 0;
  int size = 1;
};

// A weight as an FP8 checkpoint stores it: e4m3fn bit patterns and one float32 scale per output
// channel (a per-tensor scale is broadcast), so that weight[n, :] = e4m3(bits[n, :]) * scale[n].
// Plain bytes, so CPU builds (LibTorch without an FP8 dtype) can hand it around too.
struct Fp8Weight {
  at::Tensor bits;   // [N, K] uint8 on the target device: this rank's slice
  at::Tensor scale;  // [N] float32 on the target device
};

// Where tensors come from: a checkpoint component or a seeded random generator.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool has(const std::string& key) const = 0;
  // Reads `slice` of `key`, after checking the stored shape equals `full_shape`.
  virtual at::Tensor load(const std::string& key, const std::vector<int64_t>& full_shape,
                          const io::Slice& slice, at::ScalarType dtype, const at::Device& device,
                          Init init) = 0;
  // `slice` of a 2-D `key` as stored in an FP8 checkpoint (e4m3 + scales), for the FP8 linears of
  // --fp8 to take without a model-dtype copy; nullopt where the source has no such form of the key
  // (the caller then loads and quantises it). Marks the key used like `load`.
  virtual std::optional<Fp8Weight> load_fp8(const std::string& key, const std::vector<int64_t>& full_shape,
                                            const io::Slice& slice, const at::Device& device) {
    (void)key, (void)full_shape, (void)slice, (void)device;
    return std::nullopt;
  }
  // Throws if the source holds tensors nobody asked for (besides `ignore` patterns).
  virtual void check_all_used() const = 0;
  virtual uint64_t bytes_read() const = 0;
  virtual std::string describe() const = 0;
};

class Fp8Scales;

// A checkpoint component. `root` is prepended to every requested key (e.g. "language_model.model."),
// which is how differently prefixed checkpoint generations map onto one module tree.
//
// FP8 checkpoints (lib/nn/fp8_source.h): an F8_E4M3 weight is read with its scale (`<m>.weight_scale`,
// or ComfyUI's legacy `<m>.scale_weight`) as fp8 x scale in float32, then cast to the dtype asked for;
// `load_fp8` hands the stored e4m3 and scales over as they are.
class CheckpointSource : public WeightSource {
 public:
  CheckpointSource(std::shared_ptr<io::TensorStore> store, std::string root = "",
                   std::vector<std::string> ignore_prefixes = {});
  ~CheckpointSource() override;
  bool has(const std::string& key) const override;
  at::Tensor load(const std::string& key, const std::vector<int64_t>& full_shape, const io::Slice& slice,
                  at::ScalarType dtype, const at::Device& device, Init init) override;
  std::optional<Fp8Weight> load_fp8(const std::string& key, const std::vector<int64_t>& full_shape,
                                    const io::Slice& slice, const at::Device& device) override;
  void check_all_used() const override;
  uint64_t bytes_read() const override { return store_->bytes_read(); }
  std::string describe() const override { return store_->location(); }
  io::TensorStore& store() { return *store_; }
  // Keys of the store that are not ignored: what a complete load reads.
  int64_t expected_count() const;

 private:
  std::shared_ptr<io::TensorStore> store_;
  std::string root_;
  std::unique_ptr<Fp8Scales> fp8_;  // the component's FP8 scale tensors (none for most checkpoints)
  bool ignored(const std::string& key) const;
  // The stored shape of `full` checked against `full_shape`, and the key marked used.
  const io::TensorInfo& checked_info(const std::string& full, const std::vector<int64_t>& full_shape);
  std::vector<std::string> ignore_;  // full-key prefixes or suffixes (".num_batches_tracked") not to report
  std::set<std::string> used_;
};

// Seeded random tensors: the value of a key depends only on (seed, key), never on the mesh.
class RandomSource : public WeightSource {
 public:
  explicit RandomSource(uint64_t seed) : seed_(seed) {}
  bool has(const std::string&) const override { return true; }
  at::Tensor load(const std::string& key, const std::vector<int64_t>& full_shape, const io::Slice& slice,
                  at::ScalarType dtype, const at::Device& device, Init init) override;
  void check_all_used() const override {}
  uint64_t bytes_read() const override { return 0; }
  std::string describe() const override { return "random weights (seed " + std::to_string(seed_) + ")"; }

 private:
  uint64_t seed_;
};

// A source that wraps another: everything passes through; subclasses add to `load`.
class WrappedSource : public WeightSource {
 public:
  explicit WrappedSource(std::shared_ptr<WeightSource> inner) : inner_(std::move(inner)) {}
  bool has(const std::string& key) const override { return inner_->has(key); }
  at::Tensor load(const std::string& key, const std::vector<int64_t>& full_shape, const io::Slice& slice,
                  at::ScalarType dtype, const at::Device& device, Init init) override {
    return inner_->load(key, full_shape, slice, dtype, device, init);
  }
  std::optional<Fp8Weight> load_fp8(const std::string& key, const std::vector<int64_t>& full_shape,
                                    const io::Slice& slice, const at::Device& device) override {
    return inner_->load_fp8(key, full_shape, slice, device);
  }
  void check_all_used() const override { inner_->check_all_used(); }
  uint64_t bytes_read() const override { return inner_->bytes_read(); }
  std::string describe() const override { return inner_->describe(); }

 private:
  std::shared_ptr<WeightSource> inner_;
};

// Keeps a copy of every tensor it returns (whole tensors only): how the built-in tiny models are
// exported as checkpoint folders.
class RecordingSource : public WrappedSource {
 public:
  using WrappedSource::WrappedSource;
  at::Tensor load(const std::string& key, const std::vector<int64_t>& full_shape, const io::Slice& slice,
                  at::ScalarType dtype, const at::Device& device, Init init) override;
  // Never the FP8 form: every tensor goes through `load`, where it is recorded.
  std::optional<Fp8Weight> load_fp8(const std::string&, const std::vector<int64_t>&, const io::Slice&,
                                    const at::Device&) override {
    return std::nullopt;
  }
  const std::map<std::string, at::Tensor>& recorded() const { return recorded_; }

 private:
  std::map<std::string, at::Tensor> recorded_;
};

// Shows loading progress on rank 0: one item per tensor, `total` expected.
class ProgressSource : public WrappedSource {
 public:
  ProgressSource(std::shared_ptr<WeightSource> inner, const std::string& label, int64_t total);
  ~ProgressSource() override;
  at::Tensor load(const std::string& key, const std::vector<int64_t>& full_shape, const io::Slice& slice,
                  at::ScalarType dtype, const at::Device& device, Init init) override;
  std::optional<Fp8Weight> load_fp8(const std::string& key, const std::vector<int64_t>& full_shape,
                                    const io::Slice& slice, const at::Device& device) override;

 private:
  std::unique_ptr<runtime::Progress> progress_;
};

// A view of a source with a key prefix, a dtype, a device and a TP group (the candle VarBuilder idea).
class Weights {
 public:
  Weights(std::shared_ptr<WeightSource> source, at::ScalarType dtype, at::Device device, TpGroup tp = {});

  Weights pp(const std::string& name) const;  // child prefix "a.b" -> "a.b.name"
  Weights pp(int64_t index) const { return pp(std::to_string(index)); }
  Weights with_tp(TpGroup tp) const;

  // A required tensor: its full (unsharded) shape, its sharding and its random init.
  at::Tensor get(const std::string& name, const std::vector<int64_t>& full_shape,
                 const Shard& shard = Shard::replicated(), Init init = Init::Linear) const;
  // The stored FP8 form of a 2-D tensor (WeightSource::load_fp8) on this view's device, or nullopt.
  std::optional<Fp8Weight> get_fp8(const std::string& name, const std::vector<int64_t>& full_shape,
                                   const Shard& shard) const;
  bool has(const std::string& name) const { return source_->has(key(name)); }
  std::string key(const std::string& name) const { return prefix_.empty() ? name : prefix_ + "." + name; }

  at::ScalarType dtype() const { return dtype_; }
  const at::Device& device() const { return device_; }
  const TpGroup& tp() const { return tp_; }
  WeightSource& source() const { return *source_; }

  // The slice of `full_shape` this rank holds under `shard` (validates divisibility).
  io::Slice slice_for(const std::string& key, const std::vector<int64_t>& full_shape, const Shard& shard) const;

 private:
  std::shared_ptr<WeightSource> source_;
  std::string prefix_;
  at::ScalarType dtype_;
  at::Device device_;
  TpGroup tp_;
};

}  // namespace ditgen::nn
