#pragma once
// A golden case folder (see ../shared/fixtures/README.md): config.json, case.json, io.safetensors
// with `in.*` inputs and `out.*` references, plus weight files.
#include <ATen/ATen.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "lib/io/safetensors.h"
#include "lib/nn/offload.h"
#include "lib/parallel/context.h"

namespace ditgen::verify {

struct CaseOptions {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  double tolerance = 0;  // 0: the kind's default
  // The mesh the case runs under (one process when null); results must match the single run.
  std::shared_ptr<parallel::Context> parallel;
  // --parallel-text: text-encoder cases run the encoder tensor-parallel over every rank (TE-P).
  bool parallel_text = false;
  // --parallel-vae: VAE cases decode with their rows split over every rank (VAE-P, lib/parallel/rows.h).
  bool parallel_vae = false;
  // --fp8: transformer cases run their block linears in FP8 (CUDA; lib/nn/linear.h); lossy, so the
  // default tolerance is wider and the report adds the cosine similarity.
  bool fp8 = false;
  // --offload: transformer, text-encoder and cache cases stream their blocks from host memory
  // (lib/nn/offload.h; on the CPU through host copies, which checks the mechanism without a GPU).
  bool offload = false;
  // A new streamer for a case's blocks under --offload, else null.
  std::shared_ptr<nn::BlockStreamer> streamer() const { return nn::make_streamer(offload, device); }
  // The ranks a VAE decode is split over: the world under --parallel-vae, else none (null).
  comm::Communicator* vae_ranks() const { return parallel_vae && parallel ? &parallel->world() : nullptr; }
};

class Case {
 public:
  explicit Case(const std::string& dir);  // io.safetensors is optional (tokenizer cases have none)

  const std::string& dir() const { return dir_; }
  const std::string& name() const { return name_; }  // folder base name
  const nlohmann::json& config() const { return config_; }  // {} when there is no config.json
  const nlohmann::json& case_json() const { return case_json_; }
  std::string file(const std::string& name) const;         // dir/name
  bool has(const std::string& key) const { return io_ && io_->has(key); }
  at::Tensor tensor(const std::string& key) const;        // CPU, stored dtype
  double scalar(const std::string& key) const;            // case.json "scalars"

 private:
  std::string dir_, name_;
  nlohmann::json config_, case_json_;
  std::shared_ptr<io::SafetensorsFile> io_;
};

}  // namespace ditgen::verify
