#pragma once
// DBCache around a transformer's block lists (docs/reference/cache-dit-semantics.md §5.1-5.5, §5.7).
// Each block list has its own state, and inside it one state per CFG branch (0 conditional, 1
// unconditional): the Fn residual of the last computed step, the middle-block residuals of the hidden
// and the encoder stream (or their TaylorSeer ladders), the cached steps, the streak counter and the
// measured differences. Per call of a list at step t:
//
//   x0 = hidden; run blocks [0, Fn); r = hidden - x0
//   decide (warm-up, mask, limits, then relative L1 of r against the stored r of the last computed step)
//   cached:   hidden += R_h (or its TaylorSeer extrapolation); encoder += R_e
//   computed: store r; run blocks [Fn, N - Bn); R_h = hidden - hidden_before, R_e likewise
//   run blocks [N - Bn, N)
//
// Rank consistency: the decision reads sums over this rank's part of the activations; `Reducer` sums
// them over every rank holding another part (the CP group) and makes them identical on every rank of
// the model replica (TP peers), so all ranks take the same branch and run the same collectives.
#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lib/cache/options.h"
#include "lib/cache/taylorseer.h"
#include "lib/parallel/context.h"

namespace ditgen::cache {

// Sums a small float64 tensor in place over the ranks that hold other parts of the activations, with
// the same result on every rank of the replica.
using Reducer = std::function<void(at::Tensor&)>;
// One process: nothing to reduce.
Reducer local_reducer();
// A model replica of `ctx`'s mesh: all-reduce (sum) over the CP group (each rank holds a sequence
// slice), then broadcast from TP rank 0 (TP peers hold the same full activations after their
// all-reduces; the broadcast makes the numbers bit-identical). `across_cfg` (a model whose reference runs
// both CFG branches as one batch, with one decision for the two: LTX-2): the sums also add up over the cfg
// axis, so --cfg 2 decides as the one call of both branches does; otherwise CFG halves keep their own.
Reducer replica_reducer(std::shared_ptr<parallel::Context> ctx, bool across_cfg = false);

// Why a step was computed or cached (§5.4, in the order the rules are checked).
enum class Reason {
  Warmup,          // step in range(0, ws, wi) (truncated to the mask's leading 1s)
  MaskCompute,     // the mask says 1
  MaskStatic,      // the mask says 0 and its mode is static: cached without measuring
  MaxCached,       // --mc reached
  MaxContinuous,   // the streak counter reached --mcc (and restarts at 0)
  MaxAccumulated,  // the accumulated positive differences reached their limit
  ThresholdOff,    // threshold <= 0: never caches
  NoReference,     // nothing stored yet to compare with or to apply
  AlwaysCache,     // threshold >= 1: cached without measuring (difference recorded as -1)
  ShapeMismatch,   // the stored residual has another shape (difference recorded as -2)
  Below,           // difference < threshold: cached
  Above,           // difference >= threshold: computed
};
const char* reason_name(Reason r);

struct StepDecision {
  int64_t step = 0;
  bool cached = false;
  Reason reason = Reason::Above;
  std::optional<double> diff;  // recorded when the rule measured (or the reference's -1/-2 markers)
};

// What one block list did for one branch during one generation.
struct ListRecord {
  std::string list;
  int branch = 0;
  int64_t blocks = 0, Fn = 0, Bn = 0;
  double threshold = 0;
  std::vector<StepDecision> steps;

  std::vector<int64_t> cached_steps() const;
  std::map<int64_t, double> residual_diffs() const;
  int64_t block_calls() const;          // blocks run over the generation
  int64_t block_calls_skipped() const;  // middle blocks replaced by the cached residual
  nlohmann::json to_json() const;
};

class Cache {
 public:
  Cache(Options options, Reducer reduce);

  const Options& options() const { return options_; }

  // The runner's hook at the start of every denoising step. Step 0 starts a generation: every
  // list's state and record is cleared and the step mask is built for `steps`.
  void begin_step(int64_t step, int64_t steps);
  int64_t step() const { return step_; }

  // Blocks [begin, end) of a list, updating the tensors `run` reads and writes.
  using RunBlocks = std::function<void(int64_t begin, int64_t end)>;
  // Runs the list `name` of `num_blocks` blocks through the cache for `branch` at the current step.
  // `hidden` (and `encoder`, when the list has a second stream) must be the tensors `run` replaces
  // (it assigns new tensors; it never writes into the old ones). The list's threshold is
  // rdt * `threshold_factor`.
  void run(const std::string& name, int64_t num_blocks, double threshold_factor, int branch,
           at::Tensor& hidden, at::Tensor* encoder, const RunBlocks& run);

  // Every list and branch, in first-use order.
  std::vector<ListRecord> records() const;
  // {"tag", "calibrator_tag", "name_cached_steps", "options", "lists": [...], "block_calls",
  //  "block_calls_skipped"}; name_cached_steps is the `_S` count of the reference's names (the last
  // block list's cached steps, branch 0: the reference reads the transformer's stats from its last list).
  nlohmann::json report(std::optional<bool> separate_cfg = std::nullopt) const;
  // One line for rank 0: "cache DBCache_...: transformer_blocks cached 9/28 steps, ...".
  std::string summary(std::optional<bool> separate_cfg = std::nullopt) const;

 private:
  struct BranchState {
    at::Tensor fn_residual;              // the Fn residual of the last computed step
    at::Tensor mid_hidden, mid_encoder;  // middle-block residuals of the last computed step
    std::unique_ptr<TaylorSeer> seer_hidden, seer_encoder;
    std::vector<int64_t> cached;
    int64_t continuous = 0;  // the reference's streak counter (§5.4 rule 4)
    double accumulated = 0;  // sum of positive differences
    int64_t last_step = -1;
    ListRecord record;
  };
  struct List {
    std::string name;
    int64_t blocks = 0;
    double threshold = 0;
    std::map<int, BranchState> branches;
  };

  StepDecision decide(BranchState& st, double threshold, const at::Tensor& fn_residual);
  void add_cached(BranchState& st);
  bool in_warmup(int64_t step) const;

  Options options_;
  Reducer reduce_;
  int64_t step_ = -1, steps_ = 0;
  std::vector<int> mask_;
  std::vector<List> lists_;
};

// The first block of each list whose running DBCache decides only after the blocks before it ran (Fn), or
// -1 when every block runs (no cache, or one that is off): --offload prefetches no copy past it.
int64_t decision_block(const Cache* cache);

}  // namespace ditgen::cache
