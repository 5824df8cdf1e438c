#pragma once
// Flow-matching Euler schedules (diffusers FlowMatchEulerDiscreteScheduler semantics, in fp32).
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ditgen::sched {

struct Schedule {
  std::vector<float> sigmas;     // N + 1 values, the last is 0
  std::vector<float> timesteps;  // N values, sigma * 1000
};

// FLUX.2's empirical mu (flux2.md §5.3): depends on the packed image token count and the steps.
double flux2_empirical_mu(int64_t image_seq_len, int64_t num_steps);

// diffusers' calculate_shift: mu linear in the image token count through (base_seq_len, base_shift)
// and (max_seq_len, max_shift), not clamped (Qwen-Image: qwen-image.md §5.3).
double linear_mu(int64_t image_seq_len, int64_t base_seq_len, int64_t max_seq_len, double base_shift,
                 double max_shift);

// sigmas_in = linspace(1, 1/N, N) in fp32, shifted exponentially by mu:
// s = e^mu / (e^mu + (1/s_in - 1)), timesteps = s * 1000, then a terminal 0. With `shift_terminal`
// > 0 the sigmas are first stretched so that the last one lands on it (qwen-image.md §5.3 step 4).
Schedule exponential_shift_schedule(int64_t num_steps, double mu, double shift_terminal = 0);

// Static shift (use_dynamic_shifting = false): s = shift*s_in / (1 + (shift-1)*s_in).
Schedule static_shift_schedule(int64_t num_steps, double shift, double shift_terminal = 0);

// scheduler/scheduler_config.json of a FlowMatchEulerDiscreteScheduler as Qwen-Image and LTX-2 ship it:
// exponential time shift, mu linear in the latent token count (or a static shift), optional terminal
// stretch. Absent keys take `defaults` (the model's values), except shift_terminal (absent = none, as
// upstream). Options this sampler does not implement (Karras/beta sigmas, stochastic sampling, ...)
// are refused naming the key.
struct FlowMatchConfig {
  bool use_dynamic_shifting = true;
  double shift = 1.0;  // without dynamic shifting
  double base_shift = 0.5, max_shift = 1.15;
  int64_t base_image_seq_len = 256, max_image_seq_len = 4096;
  double shift_terminal = 0;  // 0: none
  static FlowMatchConfig from_json(const nlohmann::json& j, const std::string& where,
                                   const FlowMatchConfig& defaults);
  // The N-step schedule for `seq_len` latent tokens (the packed image, or the video's tokens).
  Schedule schedule(int64_t steps, int64_t seq_len) const;
};

}  // namespace ditgen::sched
