#include "lib/nn/embeddings.h"

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "lib/runtime/error.h"

namespace ditgen::nn {

void check_rope_axes(const std::vector<int64_t>& axes, int64_t head_dim, const std::string& where) {
  int64_t sum = 0;
  for (auto a : axes) {
    DITGEN_CHECK(a > 0 && a % 2 == 0, "{}: every axes_dims_rope entry must be even and positive, got {}",
                 where, a);
    sum += a;
  }
  DITGEN_CHECK(sum == head_dim, "{}: axes_dims_rope sums to {} but attention_head_dim is {}", where, sum,
               head_dim);
}

at::Tensor timestep_features(const at::Tensor& v, int64_t channels, double scale) {
  // diffusers' fp32 arithmetic (flux2.md §10.1): the exponent is an fp32 product and quotient and exp
  // is correctly rounded (a 1-ulp vectorised exp costs 1.8e-5 at arguments near 4000), so the
  // frequencies come from the host once; the argument is an fp32 product on the device.
  // Cached per device: a pageable host-to-device copy each step would stall the stream.
  static std::map<std::pair<std::string, int64_t>, at::Tensor> cache;
  at::Tensor& freqs = cache[{v.device().str(), channels}];
  if (!freqs.defined()) {
    const int64_t half = channels / 2;
    std::vector<float> f(static_cast<size_t>(half));
    const float neg_log = static_cast<float>(-std::log(10000.0));
    for (int64_t k = 0; k < half; ++k) {
      const float e = neg_log * static_cast<float>(k) / static_cast<float>(half);
      f[static_cast<size_t>(k)] = static_cast<float>(std::exp(static_cast<double>(e)));
    }
    freqs = at::tensor(f).to(v.device());
  }
  at::Tensor arg = v.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);  // [B, half]
  if (scale != 1.0) arg = arg * scale;
  return at::cat({at::cos(arg), at::sin(arg)}, 1);  // cosines first
}

}  // namespace ditgen::nn
