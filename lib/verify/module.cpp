#include "lib/verify/module.h"

#include "lib/io/checkpoint.h"

namespace ditgen::verify {

std::shared_ptr<nn::CheckpointSource> case_weights(const Case& c, std::vector<std::string> unread,
                                                   const std::string& file) {
  return std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file(file)}), "",
                                                std::move(unread));
}

void compare_with_one_rank(Report& report, const Case& c, const CaseOptions& opt, const std::string& name,
                           const at::Tensor& ours, const std::function<at::Tensor()>& one_rank, double tol) {
  compare(report, name, ours, c.tensor(name), tol);
  if (opt.vae_ranks()) compare(report, name + "_vs_one_rank", ours, one_rank(), one_rank_tolerance(opt, tol));
}

}  // namespace ditgen::verify
