#include "lib/cache/step_cache.h"

#include "lib/runtime/error.h"

namespace ditgen::cache {

void StepCache::on_step(int64_t step, int64_t steps) {
  step_ = step;
  steps_ = steps;
  if (cache_) cache_->begin_step(step, steps);
}

Cache* StepCache::get(const Options& options, const std::shared_ptr<parallel::Context>& ctx, const char* model) {
  if (!options.enabled) {
    cache_.reset();
    return nullptr;
  }
  DITGEN_CHECK(step_ >= 0, "{} with --cache: the denoising loop did not announce its step", model);
  if (!cache_ || cache_->options() != options) {
    cache_ = std::make_unique<Cache>(options, replica_reducer(ctx, /*across_cfg=*/!separate_cfg_));
    cache_->begin_step(step_, steps_);
  }
  return cache_.get();
}

}  // namespace ditgen::cache
