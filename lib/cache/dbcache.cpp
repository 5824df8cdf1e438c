#include "lib/cache/dbcache.h"

#include <cmath>

#include "lib/runtime/error.h"

namespace ditgen::cache {

Reducer local_reducer() {
  return [](at::Tensor&) {};
}

Reducer replica_reducer(std::shared_ptr<parallel::Context> ctx, bool across_cfg) {
  return [ctx, across_cfg](at::Tensor& t) {
    const auto& mesh = ctx->mesh();
    if (mesh.cp_size() > 1) ctx->cp().all_reduce(t, comm::ReduceOp::Sum);
    if (across_cfg && mesh.shape().cfg > 1) ctx->cfg().all_reduce(t, comm::ReduceOp::Sum);
    if (mesh.shape().tp > 1) ctx->tp().broadcast(t, 0);
  };
}

const char* reason_name(Reason r) {
  switch (r) {
    case Reason::Warmup:
      return "warmup";
    case Reason::MaskCompute:
      return "mask_compute";
    case Reason::MaskStatic:
      return "mask_static";
    case Reason::MaxCached:
      return "max_cached_steps";
    case Reason::MaxContinuous:
      return "max_continuous_cached_steps";
    case Reason::MaxAccumulated:
      return "max_accumulated_diff";
    case Reason::ThresholdOff:
      return "threshold_off";
    case Reason::NoReference:
      return "no_reference";
    case Reason::AlwaysCache:
      return "threshold_always";
    case Reason::ShapeMismatch:
      return "shape_mismatch";
    case Reason::Below:
      return "below_threshold";
    case Reason::Above:
      return "above_threshold";
  }
  return "?";
}

// ---- records ------------------------------------------------------------------------------------

std::vector<int64_t> ListRecord::cached_steps() const {
  std::vector<int64_t> out;
  for (const auto& d : steps)
    if (d.cached) out.push_back(d.step);
  return out;
}

std::map<int64_t, double> ListRecord::residual_diffs() const {
  std::map<int64_t, double> out;
  for (const auto& d : steps)
    if (d.diff) out[d.step] = *d.diff;
  return out;
}

int64_t ListRecord::block_calls() const {
  int64_t n = 0;
  for (const auto& d : steps) n += d.cached ? Fn + Bn : blocks;
  return n;
}

int64_t ListRecord::block_calls_skipped() const {
  return static_cast<int64_t>(steps.size()) * blocks - block_calls();
}

nlohmann::json ListRecord::to_json() const {
  nlohmann::json diffs = nlohmann::json::object();
  for (const auto& [step, d] : residual_diffs()) diffs[std::to_string(step)] = d;
  nlohmann::json decisions = nlohmann::json::array();
  for (const auto& d : steps) {
    nlohmann::json j = {{"step", d.step}, {"cached", d.cached}, {"reason", reason_name(d.reason)}};
    if (d.diff) j["diff"] = *d.diff;
    decisions.push_back(j);
  }
  return {{"name", list},
          {"branch", branch},
          {"blocks", blocks},
          {"Fn", Fn},
          {"Bn", Bn},
          {"threshold", threshold},
          {"cached_steps", cached_steps()},
          {"residual_diffs", diffs},
          {"decisions", decisions},
          {"block_calls", block_calls()},
          {"block_calls_skipped", block_calls_skipped()}};
}

// ---- the state machine --------------------------------------------------------------------------

Cache::Cache(Options options, Reducer reduce) : options_(std::move(options)), reduce_(std::move(reduce)) {
  options_.validate();
  if (!reduce_) reduce_ = local_reducer();
}

void Cache::begin_step(int64_t step, int64_t steps) {
  DITGEN_CHECK(step >= 0 && step < steps, "cache: step {} is outside a run of {} steps", step, steps);
  if (step == 0) {
    mask_ = options_.mask(steps);  // validates a user mask against the step count
    for (auto& l : lists_) l.branches.clear();
  } else {
    DITGEN_CHECK(step_ >= 0 && steps == steps_, "cache: step {} of {} began without step 0 of this run", step,
                 steps);
  }
  step_ = step;
  steps_ = steps;
}

bool Cache::in_warmup(int64_t step) const {
  int64_t warmup = options_.max_warmup_steps;
  if (!mask_.empty()) {
    int64_t lead = 0;  // a mask truncates the warm-up to its leading run of 1s
    while (lead < static_cast<int64_t>(mask_.size()) && mask_[static_cast<size_t>(lead)] == 1) ++lead;
    warmup = std::min(warmup, lead);
  }
  return step < warmup && step % options_.warmup_interval == 0;
}

// The streak counter as the reference keeps it: a cached step right after a cached step adds 1 (2 when
// the counter stood at 0, counting the pair); a cached step after a gap leaves it; only the
// max-continuous rule resets it.
void Cache::add_cached(BranchState& st) {
  const int64_t step = step_;
  if (!st.cached.empty()) {
    if (step - st.cached.back() == 1) st.continuous += st.continuous == 0 ? 2 : 1;
  } else {
    st.continuous += 1;
  }
  st.cached.push_back(step);
}

StepDecision Cache::decide(BranchState& st, double threshold, const at::Tensor& r) {
  StepDecision d;
  d.step = step_;
  auto verdict = [&](bool cached, Reason why) {
    d.cached = cached;
    d.reason = why;
    return d;
  };
  const bool have_residual =
      options_.taylorseer ? (st.seer_hidden && !st.seer_hidden->empty()) : st.mid_hidden.defined();

  if (in_warmup(step_)) return verdict(false, Reason::Warmup);
  if (!mask_.empty()) {
    const auto i = static_cast<size_t>(step_);
    if (i < mask_.size() && mask_[i] == 1) return verdict(false, Reason::MaskCompute);
    if (options_.static_mask()) {
      // The reference would fail here without a stored residual; we compute instead.
      if (!have_residual) return verdict(false, Reason::NoReference);
      return verdict(true, Reason::MaskStatic);
    }
  }
  if (options_.max_cached_steps >= 0 && static_cast<int64_t>(st.cached.size()) >= options_.max_cached_steps)
    return verdict(false, Reason::MaxCached);
  if (options_.max_continuous_cached_steps >= 0 && st.continuous >= options_.max_continuous_cached_steps) {
    st.continuous = 0;
    return verdict(false, Reason::MaxContinuous);
  }
  if (options_.max_accumulated_residual_diff > 0 && st.accumulated >= options_.max_accumulated_residual_diff)
    return verdict(false, Reason::MaxAccumulated);
  if (threshold <= 0) return verdict(false, Reason::ThresholdOff);
  if (!st.fn_residual.defined() || !have_residual) return verdict(false, Reason::NoReference);
  auto record = [&](double diff) {
    d.diff = diff;
    if (diff > 0) st.accumulated += diff;
  };
  if (threshold >= 1) {
    record(-1.0);
    return verdict(true, Reason::AlwaysCache);
  }
  if (st.fn_residual.sizes() != r.sizes()) {
    record(-2.0);
    return verdict(false, Reason::ShapeMismatch);
  }
  // Relative L1 (§5.3): sum|prev - cur| / sum|prev| over the whole activation. Both sums are taken
  // over this rank's part in float64 and summed over the parts before the one division, so every rank
  // (and every mesh) divides the same two numbers.
  at::Tensor sums =
      at::stack({(st.fn_residual - r).abs().sum(at::kDouble), st.fn_residual.abs().sum(at::kDouble)});
  reduce_(sums);
  sums = sums.to(at::kCPU);
  const double num = sums[0].item<double>(), den = sums[1].item<double>();
  const double diff = num / den;  // 0/0 is NaN: never below the threshold, computes
  record(diff);
  return verdict(diff < threshold, diff < threshold ? Reason::Below : Reason::Above);
}

void Cache::run(const std::string& name, int64_t num_blocks, double threshold_factor, int branch,
                at::Tensor& hidden, at::Tensor* encoder, const RunBlocks& run) {
  if (!options_.enabled) {
    run(0, num_blocks);
    return;
  }
  DITGEN_CHECK(step_ >= 0, "cache: block list '{}' ran before the first denoising step began", name);
  if (num_blocks == 0) return;
  const int64_t Fn = options_.Fn, Bn = options_.Bn;
  DITGEN_CHECK(
      Fn + Bn <= num_blocks,
      "--Fn {} and --Bn {} need at least {} blocks, but the transformer's {} has {}; lower --Fn or --Bn", Fn,
      Bn, Fn + Bn, name, num_blocks);

  List* list = nullptr;
  for (auto& l : lists_)
    if (l.name == name) list = &l;
  if (list == nullptr) {
    lists_.push_back({name, num_blocks, options_.residual_diff_threshold * threshold_factor, {}});
    list = &lists_.back();
  }
  DITGEN_CHECK(list->blocks == num_blocks, "cache: block list '{}' had {} blocks and now has {}", name,
               list->blocks, num_blocks);
  BranchState& st = list->branches[branch];
  if (st.last_step < 0) {
    st.record.list = name;
    st.record.branch = branch;
    st.record.blocks = num_blocks;
    st.record.Fn = Fn;
    st.record.Bn = Bn;
    st.record.threshold = list->threshold;
    if (options_.taylorseer) {
      st.seer_hidden = std::make_unique<TaylorSeer>(options_.taylorseer_order);
      st.seer_encoder = std::make_unique<TaylorSeer>(options_.taylorseer_order);
    }
  }
  DITGEN_CHECK(step_ > st.last_step, "cache: block list '{}' ran twice in step {} for CFG branch {}", name,
               step_, branch);
  st.last_step = step_;

  const at::Tensor x0 = hidden;
  run(0, Fn);
  at::Tensor r = hidden - x0;  // the Fn residual, same sharding as the stored one
  StepDecision d = decide(st, list->threshold, r);
  if (d.cached) {
    add_cached(st);
    const at::Tensor rh = options_.taylorseer ? st.seer_hidden->approximate(step_) : st.mid_hidden;
    hidden = (rh + hidden).contiguous();
    if (encoder != nullptr) {
      const at::Tensor re = options_.taylorseer ? st.seer_encoder->approximate(step_) : st.mid_encoder;
      if (re.defined()) *encoder = (re + *encoder).contiguous();
    }
  } else {
    st.fn_residual = r;
    const at::Tensor h_in = hidden;
    const at::Tensor e_in = encoder != nullptr ? *encoder : at::Tensor();
    run(Fn, num_blocks - Bn);
    at::Tensor rh = hidden.contiguous() - h_in;
    at::Tensor re = encoder != nullptr ? encoder->contiguous() - e_in : at::Tensor();
    if (options_.taylorseer) {
      st.seer_hidden->update(step_, rh);
      if (re.defined()) st.seer_encoder->update(step_, re);
    } else {
      st.mid_hidden = rh;
      st.mid_encoder = re;
    }
  }
  r = at::Tensor();
  run(num_blocks - Bn, num_blocks);
  st.record.steps.push_back(d);
  if (step_ == steps_ - 1) {  // the generation's last use of this state: free its activations now
    st.fn_residual = st.mid_hidden = st.mid_encoder = at::Tensor();
    if (st.seer_hidden) st.seer_hidden->reset();
    if (st.seer_encoder) st.seer_encoder->reset();
  }
}

std::vector<ListRecord> Cache::records() const {
  std::vector<ListRecord> out;
  for (const auto& l : lists_)
    for (const auto& [branch, st] : l.branches) out.push_back(st.record);
  return out;
}

nlohmann::json Cache::report(std::optional<bool> separate_cfg) const {
  nlohmann::json lists = nlohmann::json::array();
  int64_t calls = 0, skipped = 0, name_steps = 0;
  for (const auto& r : records()) {
    lists.push_back(r.to_json());
    calls += r.block_calls();
    skipped += r.block_calls_skipped();
    if (r.branch == 0) name_steps = static_cast<int64_t>(r.cached_steps().size());
  }
  return {{"tag", options_.tag(steps_, separate_cfg)},
          {"calibrator_tag", options_.calibrator_tag()},
          {"name_cached_steps", name_steps},
          {"options", options_.to_json()},
          {"steps", steps_},
          {"mask", mask_string(mask_)},
          {"lists", lists},
          {"block_calls", calls},
          {"block_calls_skipped", skipped}};
}

std::string Cache::summary(std::optional<bool> separate_cfg) const {
  std::string s = fmt::format("cache {}_{}:", options_.tag(steps_, separate_cfg), options_.calibrator_tag());
  int64_t calls = 0, skipped = 0;
  bool first = true;
  for (const auto& r : records()) {
    s += fmt::format("{} {}{} cached {}/{} steps", first ? "" : ",", r.list,
                     r.branch == 0 ? std::string() : fmt::format(" (branch {})", r.branch),
                     r.cached_steps().size(), r.steps.size());
    first = false;
    calls += r.block_calls();
    skipped += r.block_calls_skipped();
  }
  const int64_t total = calls + skipped;
  if (total > 0)
    s += fmt::format("; {} of {} block calls skipped ({:.1f}%)", skipped, total, 100.0 * skipped / total);
  return s;
}

int64_t decision_block(const Cache* cache) {
  return cache != nullptr && cache->options().enabled ? cache->options().Fn : -1;
}

}  // namespace ditgen::cache
