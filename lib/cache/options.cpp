#include "lib/cache/options.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <numeric>

#include "lib/runtime/error.h"

namespace ditgen::cache {

namespace {

// Full policy name for a --scm value (aliases s m f u), or "" when unknown.
std::string policy_name(const std::string& p) {
  if (p == "slow" || p == "s") return "slow";
  if (p == "medium" || p == "m") return "medium";
  if (p == "fast" || p == "f") return "fast";
  if (p == "ultra" || p == "u") return "ultra";
  return "";
}

// Alternating compute / cache bins of one policy (§5.6).
struct Bins {
  std::vector<int64_t> compute, cache;
  int64_t sum() const {
    return std::accumulate(compute.begin(), compute.end(), int64_t{0}) +
           std::accumulate(cache.begin(), cache.end(), int64_t{0});
  }
};

Bins preset_28(const std::string& p) {
  if (p == "slow") return {{8, 3, 3, 2, 1, 1}, {1, 2, 2, 2, 3}};
  if (p == "medium") return {{6, 2, 2, 2, 2, 1}, {1, 3, 3, 3, 3}};
  if (p == "fast") return {{6, 1, 1, 1, 1, 1}, {1, 3, 4, 5, 4}};
  return {{4, 1, 1, 1, 1}, {2, 5, 6, 7}};  // ultra
}

// Distilled-model tables: 10-15 steps, 9 steps, 8 steps.
Bins preset_short(const std::string& p, int64_t steps) {
  if (steps == 9) {
    if (p == "slow") return {{5, 2, 1}, {1}};
    if (p == "medium") return {{5, 1, 1}, {1, 1}};
    if (p == "fast") return {{4, 1, 1}, {1, 2}};
    return {{3, 1, 1}, {2, 2}};
  }
  if (steps == 8) {
    if (p == "slow") return {{5, 1, 1}, {1}};
    if (p == "medium") return {{4, 1, 1}, {1, 1}};
    if (p == "fast") return {{3, 1, 1}, {1, 2}};
    return {{2, 1, 1}, {2, 2}};
  }
  if (p == "slow") return {{4, 2, 2, 2, 1}, {1, 1, 1, 1}};
  if (p == "medium") return {{4, 2, 1, 1, 1}, {1, 1, 2, 2}};
  if (p == "fast") return {{3, 1, 1, 1, 1}, {1, 2, 2, 3}};
  return {{2, 1, 1, 1, 1}, {1, 2, 3, 3}};
}

// Shortens the bins to `target` steps from the end, a cache bin then a compute bin at a time.
void truncate(Bins& b, int64_t target) {
  auto shrink = [](std::vector<int64_t>& v) {
    if (v.empty()) return;
    if (--v.back() == 0) v.pop_back();
  };
  while (b.sum() > target) {
    shrink(b.cache);
    if (b.sum() <= target) break;
    shrink(b.compute);
  }
}

// More than 28 steps: every paired bin grows by max(1, int(bin * steps/28 * 0.5)) per round, the last
// compute bin by 1, until the bins cover the steps; then they are truncated to exactly `steps`.
void expand(Bins& b, int64_t steps) {
  const Bins base = b;
  const size_t paired = std::min(b.compute.size(), b.cache.size());
  const double factor = (static_cast<double>(steps) / 28.0) * 0.5;
  auto grow = [&](int64_t bin) {
    return std::max<int64_t>(static_cast<int64_t>(static_cast<double>(bin) * factor), 1);
  };
  while (b.sum() < steps) {
    for (size_t i = 0; i < paired && b.sum() < steps; ++i) {
      b.compute[i] += grow(base.compute[i]);
      if (b.sum() >= steps) break;
      b.cache[i] += grow(base.cache[i]);
    }
    if (b.sum() >= steps) break;
    b.compute.back() += 1;
  }
  truncate(b, steps);
}

std::vector<int> build(const Bins& b, int64_t steps) {
  std::vector<int> mask;
  size_t ci = 0, ki = 0;
  while (static_cast<int64_t>(mask.size()) < steps && (ci < b.compute.size() || ki < b.cache.size())) {
    if (ci < b.compute.size()) mask.insert(mask.end(), static_cast<size_t>(b.compute[ci++]), 1);
    if (ki < b.cache.size()) mask.insert(mask.end(), static_cast<size_t>(b.cache[ki++]), 0);
  }
  mask.resize(static_cast<size_t>(steps), 1);
  return mask;
}

}  // namespace

std::vector<int> steps_mask(const std::string& policy, int64_t steps) {
  const std::string p = policy_name(policy);
  DITGEN_CHECK(!p.empty(), "--scm '{}' is not one of slow, medium, fast, ultra (or s, m, f, u)", policy);
  DITGEN_CHECK(steps >= 1, "--scm {} needs at least 1 denoising step, got {}", p, steps);
  Bins b;
  if (steps >= 28) {
    b = preset_28(p);
    if (steps > 28) expand(b, steps);
  } else if (steps >= 16) {
    b = preset_28(p);
    truncate(b, steps);
  } else if (steps >= 8) {
    b = preset_short(p, steps);
    truncate(b, steps);
  } else if (steps == 7) {
    b = preset_short(p, 8);
    truncate(b, steps);
  } else if (steps >= 5) {
    b = {{3, 1}, {2}};  // the reference's 6-step pattern, every policy
    truncate(b, steps);
  } else {
    b = {{2, 1}, {1}};  // the reference's 4-step pattern
    truncate(b, steps);
  }
  std::vector<int> mask = build(b, steps);
  mask.back() = 1;  // the last step always computes
  return mask;
}

std::vector<int> parse_mask(const std::string& text, const std::string& flag) {
  std::vector<int> mask;
  for (char ch : text) {
    DITGEN_CHECK(ch == '0' || ch == '1',
                 "{} must be a string of 0 and 1, one per denoising step (1 = compute), got '{}'", flag,
                 text);
    mask.push_back(ch - '0');
  }
  DITGEN_CHECK(!mask.empty(), "{} must not be empty", flag);
  return mask;
}

std::string mask_string(const std::vector<int>& mask) {
  std::string s;
  for (int m : mask) s += m ? '1' : '0';
  return s;
}

std::string python_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, then Python's repr layout: fixed for exponents -4..15, else d.ddde±XX.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  const size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  const int exp = std::atoi(sci.c_str() + e + 1);
  std::string sign;
  if (!mant.empty() && mant[0] == '-') {
    sign = "-";
    mant.erase(0, 1);
  }
  std::string digits;
  for (char ch : mant)
    if (ch != '.') digits += ch;
  if (exp >= -4 && exp < 16) {
    std::string out;
    if (exp < 0) {
      out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else {
      const size_t int_len = static_cast<size_t>(exp) + 1;
      if (digits.size() <= int_len) {
        out = digits + std::string(int_len - digits.size(), '0') + ".0";
      } else {
        out = digits.substr(0, int_len) + "." + digits.substr(int_len);
      }
    }
    return sign + out;
  }
  std::string m = digits.substr(0, 1);
  if (digits.size() > 1) m += "." + digits.substr(1);
  return fmt::format("{}{}e{}{:02d}", sign, m, exp < 0 ? "-" : "+", std::abs(exp));
}

void Options::validate() const {
  DITGEN_CHECK(Fn >= 1,
               "--Fn must be at least 1 (the first blocks are always computed; their change decides), got {}",
               Fn);
  DITGEN_CHECK(Bn >= 0, "--Bn must be 0 or more, got {}", Bn);
  DITGEN_CHECK(std::isfinite(residual_diff_threshold), "--rdt must be a finite number, got {}",
               residual_diff_threshold);
  DITGEN_CHECK(max_warmup_steps >= 0, "--ws must be 0 or more, got {}", max_warmup_steps);
  DITGEN_CHECK(warmup_interval >= 1, "--wi must be at least 1, got {}", warmup_interval);
  DITGEN_CHECK(max_cached_steps >= -1, "--mc must be -1 (unlimited) or 0 or more, got {}", max_cached_steps);
  DITGEN_CHECK(max_continuous_cached_steps >= -1, "--mcc must be -1 (unlimited) or 0 or more, got {}",
               max_continuous_cached_steps);
  DITGEN_CHECK(std::isfinite(max_accumulated_residual_diff),
               "the maximum accumulated residual difference must be a finite number, got {}",
               max_accumulated_residual_diff);
  DITGEN_CHECK(taylorseer_order >= 1 && taylorseer_order <= 8,
               "--taylorseer-order must be between 1 and 8, got {}", taylorseer_order);
  DITGEN_CHECK(mask_policy.empty() || !policy_name(mask_policy).empty(),
               "--scm '{}' is not one of slow, medium, fast, ultra (or s, m, f, u)", mask_policy);
  DITGEN_CHECK(mask_policy.empty() || steps_mask.empty(),
               "--scm {} and --steps-mask both give a steps-computation mask; give one of them", mask_policy);
  if (!steps_mask.empty()) parse_mask(steps_mask);
  DITGEN_CHECK(mask_mode == "dynamic" || mask_mode == "static",
               "--scm-policy '{}' is not one of dynamic, static", mask_mode);
  DITGEN_CHECK(
      mask_mode == "dynamic" || has_mask(),
      "--scm-policy static caches the 0 steps of a mask, but no mask is given (--scm or --steps-mask)");
}

void Options::validate(int64_t steps) const {
  validate();
  if (!steps_mask.empty())
    DITGEN_CHECK(
        static_cast<int64_t>(steps_mask.size()) == steps,
        "--steps-mask has {} entries but the run has {} denoising steps (--steps); give one 0/1 per step",
        steps_mask.size(), steps);
  if (!mask_policy.empty()) DITGEN_CHECK(steps >= 1, "--scm needs at least 1 denoising step, got {}", steps);
}

std::vector<int> Options::mask(int64_t steps) const {
  if (!steps_mask.empty()) {
    validate(steps);
    return parse_mask(steps_mask);
  }
  if (!mask_policy.empty()) return cache::steps_mask(mask_policy, steps);
  return {};
}

std::string Options::tag(int64_t steps, std::optional<bool> separate_cfg) const {
  std::string t =
      fmt::format("DBCache_F{}B{}_W{}I{}M{}MC{}_R{}", Fn, Bn, max_warmup_steps, warmup_interval,
                  std::max<int64_t>(0, max_cached_steps), std::max<int64_t>(0, max_continuous_cached_steps),
                  python_float(residual_diff_threshold));
  if (has_mask() && steps > 0) t += fmt::format("_SCM{}_{}", mask_string(mask(steps)), mask_mode);
  if (separate_cfg) t += fmt::format("_CFG{}", *separate_cfg ? 1 : 0);
  return t;
}

std::string Options::calibrator_tag() const {
  return taylorseer ? fmt::format("T1O{}", taylorseer_order) : std::string("T0O0");
}

nlohmann::json Options::to_json() const {
  return {{"enabled", enabled},
          {"Fn", Fn},
          {"Bn", Bn},
          {"residual_diff_threshold", residual_diff_threshold},
          {"max_warmup_steps", max_warmup_steps},
          {"warmup_interval", warmup_interval},
          {"max_cached_steps", max_cached_steps},
          {"max_continuous_cached_steps", max_continuous_cached_steps},
          {"max_accumulated_residual_diff", max_accumulated_residual_diff},
          {"taylorseer", taylorseer},
          {"taylorseer_order", taylorseer_order},
          {"mask_policy", policy_name(mask_policy)},
          {"steps_mask", steps_mask},
          {"mask_mode", mask_mode},
          {"list_threshold_rules", list_threshold_rules}};
}

}  // namespace ditgen::cache
