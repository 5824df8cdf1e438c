#include "lib/sched/flow_match.h"

#include <cmath>

#include "lib/io/json.h"
#include "lib/runtime/error.h"

namespace ditgen::sched {

double flux2_empirical_mu(int64_t image_seq_len, int64_t num_steps) {
  const double a1 = 8.73809524e-05, b1 = 1.89833333;
  const double a2 = 0.00016927, b2 = 0.45666666;
  const double n = static_cast<double>(image_seq_len);
  if (image_seq_len > 4300) return a2 * n + b2;
  const double m200 = a2 * n + b2, m10 = a1 * n + b1;
  const double a = (m200 - m10) / 190.0;
  const double b = m200 - 200.0 * a;
  return a * static_cast<double>(num_steps) + b;
}

namespace {
// numpy.linspace(1, 1/N, N) in float64, then rounded to float32 as set_timesteps does.
std::vector<float> base_sigmas(int64_t n) {
  DITGEN_CHECK(n >= 1, "--steps must be at least 1, got {}", n);
  std::vector<float> s(n);
  const double start = 1.0, stop = 1.0 / static_cast<double>(n);
  const double step = n > 1 ? (stop - start) / static_cast<double>(n - 1) : 0.0;
  for (int64_t i = 0; i < n; ++i) s[i] = static_cast<float>(i == n - 1 && n > 1 ? stop : start + step * i);
  return s;
}

// diffusers' stretch_shift_to_terminal in fp32 (qwen-image.md §9.1): z = 1 - s, k = z[N-1] / (1 -
// terminal), s = 1 - z / k; the first sigma stays 1. With one step the last sigma is the first (1, so
// z[N-1] = 0) and the reference divides 0 by 0 into a NaN schedule; that one sigma stays 1 here.
Schedule finish(std::vector<float> sigmas, double shift_terminal) {
  if (shift_terminal > 0 && sigmas.back() < 1.0f) {
    const float k = (1.0f - sigmas.back()) / static_cast<float>(1.0 - shift_terminal);
    for (float& v : sigmas) v = 1.0f - (1.0f - v) / k;
  }
  Schedule out;
  for (float s : sigmas) out.timesteps.push_back(s * 1000.0f);
  sigmas.push_back(0.0f);
  out.sigmas = std::move(sigmas);
  return out;
}
}  // namespace

double linear_mu(int64_t image_seq_len, int64_t base_seq_len, int64_t max_seq_len, double base_shift,
                 double max_shift) {
  DITGEN_CHECK(max_seq_len != base_seq_len, "scheduler: max_image_seq_len equals base_image_seq_len ({})",
               base_seq_len);
  const double m = (max_shift - base_shift) / static_cast<double>(max_seq_len - base_seq_len);
  const double b = base_shift - m * static_cast<double>(base_seq_len);
  return static_cast<double>(image_seq_len) * m + b;
}

Schedule exponential_shift_schedule(int64_t num_steps, double mu, double shift_terminal) {
  std::vector<float> s = base_sigmas(num_steps);
  const float e = static_cast<float>(std::exp(mu));
  for (float& v : s) v = e / (e + (1.0f / v - 1.0f));
  return finish(std::move(s), shift_terminal);
}

Schedule static_shift_schedule(int64_t num_steps, double shift, double shift_terminal) {
  std::vector<float> s = base_sigmas(num_steps);
  const float k = static_cast<float>(shift);
  for (float& v : s) v = k * v / (1.0f + (k - 1.0f) * v);
  return finish(std::move(s), shift_terminal);
}

FlowMatchConfig FlowMatchConfig::from_json(const nlohmann::json& j, const std::string& where,
                                          const FlowMatchConfig& defaults) {
  DITGEN_CHECK(j.is_object(), "{}: the scheduler config must be a JSON object", where);
  FlowMatchConfig c = defaults;
  c.use_dynamic_shifting = io::json_get<bool>(j, "use_dynamic_shifting", c.use_dynamic_shifting, where);
  c.shift = io::json_get<double>(j, "shift", c.shift, where);
  c.base_shift = io::json_get<double>(j, "base_shift", c.base_shift, where);
  c.max_shift = io::json_get<double>(j, "max_shift", c.max_shift, where);
  c.base_image_seq_len = io::json_get<int64_t>(j, "base_image_seq_len", c.base_image_seq_len, where);
  c.max_image_seq_len = io::json_get<int64_t>(j, "max_image_seq_len", c.max_image_seq_len, where);
  c.shift_terminal = io::json_get<double>(j, "shift_terminal", 0.0, where);
  const std::string kind = io::json_get<std::string>(j, "time_shift_type", "exponential", where);
  DITGEN_CHECK(kind == "exponential", "{}: time_shift_type '{}' is not supported (only 'exponential')",
               where, kind);
  for (const char* flag : {"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas",
                           "stochastic_sampling"})
    DITGEN_CHECK(!io::json_get<bool>(j, flag, false, where), "{}: '{}' is true, which this sampler does not implement",
                 where, flag);
  DITGEN_CHECK(c.shift > 0, "{}: shift must be positive, got {}", where, c.shift);
  DITGEN_CHECK(c.shift_terminal >= 0 && c.shift_terminal < 1, "{}: shift_terminal must lie in [0, 1), got {}", where,
               c.shift_terminal);
  DITGEN_CHECK(c.base_image_seq_len >= 1, "{}: base_image_seq_len must be a positive token count, got {}", where,
               c.base_image_seq_len);
  DITGEN_CHECK(c.max_image_seq_len > c.base_image_seq_len,
               "{}: max_image_seq_len ({}) must be larger than base_image_seq_len ({}); mu is a line through both",
               where, c.max_image_seq_len, c.base_image_seq_len);
  // The sampler's timesteps are sigma x 1000, the training range of every model it serves.
  const int64_t train = io::json_get<int64_t>(j, "num_train_timesteps", 1000, where);
  DITGEN_CHECK(train == 1000, "{}: num_train_timesteps must be 1000 (timesteps are sigma x 1000), got {}", where,
               train);
  for (const char* key : {"base_shift", "max_shift"})
    DITGEN_CHECK(j.find(key) == j.end() || j[key].is_null() || std::abs(j[key].get<double>()) <= 100,
                 "{}: {} must lie in [-100, 100] (mu is an exponent), got {}", where, key, j[key].get<double>());
  return c;
}

Schedule FlowMatchConfig::schedule(int64_t steps, int64_t seq_len) const {
  if (!use_dynamic_shifting) return static_shift_schedule(steps, shift, shift_terminal);
  const double mu = linear_mu(seq_len, base_image_seq_len, max_image_seq_len, base_shift, max_shift);
  return exponential_shift_schedule(steps, mu, shift_terminal);
}

}  // namespace ditgen::sched
