#pragma once
// DBCache settings (docs/reference/cache-dit-semantics.md §5.8, §6.1): a plain struct whose fields map
// one to one onto the reference tool's cache flags, so a CLI fills it field by field. Defaults are the
// reference CLI's (`cache_dit.generate --cache`), not the library's (F8B0, rdt 0.08, mcc -1).
//
//   --cache                  enabled
//   --Fn / --Bn              Fn, Bn
//   --rdt                    residual_diff_threshold
//   --ws / --wi              max_warmup_steps, warmup_interval
//   --mc / --mcc             max_cached_steps, max_continuous_cached_steps (-1: unlimited)
//   --taylorseer             taylorseer
//   --taylorseer-order       taylorseer_order
//   --scm {slow,medium,fast,ultra} (aliases s m f u)   mask_policy
//   --steps-mask 1110...     steps_mask (ours: a user-given mask, one 0/1 per step)
//   --scm-policy {dynamic,static}                       mask_mode (the library's steps_computation_policy)
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace ditgen::cache {

struct Options {
  bool enabled = false;
  int64_t Fn = 1;  // first blocks of each list, always computed; their residual decides
  int64_t Bn = 0;  // last blocks of each list, always computed
  double residual_diff_threshold = 0.12;
  int64_t max_warmup_steps = 8;  // steps range(0, ws, wi) always compute
  int64_t warmup_interval = 1;
  int64_t max_cached_steps = -1;             // per list and branch; -1 unlimited
  int64_t max_continuous_cached_steps = 3;   // the streak counter's limit (§5.4 rule 4); -1 unlimited
  double max_accumulated_residual_diff = 0;  // library-only rule 5 (no CLI flag); <= 0 off
  bool taylorseer = false;                   // TaylorSeer calibrator on the cached residuals (§5.5)
  int64_t taylorseer_order = 1;
  std::string mask_policy;            // "", slow, medium, fast, ultra (or s, m, f, u)
  std::string steps_mask;             // "", or one '0'/'1' per step (1 = compute)
  std::string mask_mode = "dynamic";  // static: a 0 in the mask caches without measuring
  // Per-list threshold rules of the reference CLI's model examples: FLUX.2's single-stream list uses
  // 3 x rdt (§5.8). The library API (and the golden cache fixtures) use one threshold for every list.
  bool list_threshold_rules = true;

  // Refuses values the reference would misbehave on, naming the flag. The overload with `steps` also
  // checks the step mask against the run's step count.
  void validate() const;
  void validate(int64_t steps) const;

  bool has_mask() const { return !mask_policy.empty() || !steps_mask.empty(); }
  bool static_mask() const { return mask_mode == "static"; }
  // The steps-computation mask for a run of `steps` (1 = compute), empty without one.
  std::vector<int> mask(int64_t steps) const;

  // The reference tool's name tags (§6.3): "DBCache_F1B0_W8I1M0MC3_R0.12[_SCM<mask>_<mode>][_CFG0|1]"
  // (the mask part needs `steps`; separate_cfg is the model's: FLUX.2 and LTX-2 false, Qwen-Image true),
  // and the calibrator tag "T0O0" / "T1O<order>". A file name puts them as
  // C0_<cache tag>_<calibrator tag>_<mesh tag>_S<cached steps>.
  std::string tag(int64_t steps = 0, std::optional<bool> separate_cfg = std::nullopt) const;
  std::string calibrator_tag() const;

  nlohmann::json to_json() const;
  bool operator==(const Options& o) const { return to_json() == o.to_json(); }
  bool operator!=(const Options& o) const { return !(*this == o); }
};

// The reference's steps_mask(mask_policy, total_steps) (§5.6): alternating compute and cache bins of
// the 28-step presets, scaled up for more steps, truncated for 16-27, dedicated tables for 8-15, fixed
// patterns for 4 and 6; the last step always computes. The reference refuses 1, 2, 3, 5 and 7 steps;
// we truncate the next larger fixed pattern instead (4 steps for 1-3, 6 for 5, the 8-step table for 7).
// `policy` accepts the aliases s, m, f, u.
std::vector<int> steps_mask(const std::string& policy, int64_t steps);
// "1110..." -> {1, 1, 1, 0, ...}; `flag` names the source in errors.
std::vector<int> parse_mask(const std::string& text, const std::string& flag = "--steps-mask");
std::string mask_string(const std::vector<int>& mask);

// Python's repr of a float ("0.12", "1.0", "1e-05"), as the reference's names print thresholds.
std::string python_float(double v);

}  // namespace ditgen::cache
