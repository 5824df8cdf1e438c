#pragma once
// A model's block cache across one generation (what FLUX.2, Qwen-Image and LTX-2 share): it follows the
// denoising loop's steps (pipeline::Model::on_step), is built on the first cached transformer call of a
// generation (and again when the options change), and keeps its record for the report after the run.
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "lib/cache/dbcache.h"

namespace ditgen::cache {

class StepCache {
 public:
  // `separate_cfg`: whether the model's CFG branches are separate transformer calls with their own state
  // in the reference's naming (_CFG1: Qwen-Image) or not (_CFG0: FLUX.2, LTX-2).
  explicit StepCache(bool separate_cfg) : separate_cfg_(separate_cfg) {}

  void on_step(int64_t step, int64_t steps);
  // The cache for this transformer call, or null with `options` off. `model` names the model in errors.
  Cache* get(const Options& options, const std::shared_ptr<parallel::Context>& ctx, const char* model);

  nlohmann::json report() const { return cache_ ? cache_->report(separate_cfg_) : nlohmann::json(nullptr); }
  std::string summary() const { return cache_ ? cache_->summary(separate_cfg_) : ""; }

 private:
  bool separate_cfg_;
  std::unique_ptr<Cache> cache_;
  int64_t step_ = -1, steps_ = 0;
};

}  // namespace ditgen::cache
