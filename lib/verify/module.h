#pragma once
// What every model's verify entry points share: building a module from a golden case's weights file
// (every tensor of the file must be read), a kind's default tolerance, and the VAE-P self-check (the
// split result must equal the one-process one, not merely be near the reference).
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lib/nn/weights.h"
#include "lib/verify/case.h"
#include "lib/verify/compare.h"

namespace ditgen::verify {

// --tolerance when given, else the kind's default.
inline double tolerance(const CaseOptions& opt, double kind_default) {
  return opt.tolerance > 0 ? opt.tolerance : kind_default;
}

// The case's `file` as a checkpoint source that ignores the keys matching `unread` (CheckpointSource's list).
std::shared_ptr<nn::CheckpointSource> case_weights(const Case& c, std::vector<std::string> unread = {},
                                                   const std::string& file = "weights.safetensors");

// `Module(config, weights, args...)` from the case's weights.safetensors in the options' dtype and device,
// ignoring `unread`; a tensor of the file that the module does not read fails (the module tree is wrong).
template <class Module, class Config, class... Args>
Module load_case_module(const Case& c, const CaseOptions& opt, const Config& config,
                        std::vector<std::string> unread, Args&&... args) {
  auto source = case_weights(c, std::move(unread));
  Module module(config, nn::Weights(source, opt.dtype, opt.device), std::forward<Args>(args)...);
  source->check_all_used();
  return module;
}

// The tolerance of a VAE-P result against the one-process one: 1e-5 in fp32, else `tol`.
inline double one_rank_tolerance(const CaseOptions& opt, double tol) {
  return opt.dtype == at::kFloat ? 1e-5 : tol;
}

// `ours` against the case's reference tensor `name`; under VAE-P (opt.vae_ranks()) also
// `<name>_vs_one_rank` against `one_rank()`, which is computed only then.
void compare_with_one_rank(Report& report, const Case& c, const CaseOptions& opt, const std::string& name,
                           const at::Tensor& ours, const std::function<at::Tensor()>& one_rank, double tol);

}  // namespace ditgen::verify
