#include "lib/pipeline/fit_check.h"

#include <dirent.h>

#include <cstdlib>
#include <vector>

#include "lib/io/checkpoint.h"
#include "lib/io/json.h"
#include "lib/io/report.h"
#include "lib/runtime/error.h"

namespace ditgen::pipeline {

namespace {

int64_t element_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "BF16" || dtype == "F16" || dtype == "I16" || dtype == "U16") return 2;
  return 1;
}

bool has_safetensors(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return false;
  bool found = false;
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0) found = true;
  }
  ::closedir(d);
  return found;
}

std::string gib(int64_t b) { return io::human_bytes(static_cast<double>(b)); }

}  // namespace

WeightEstimate estimate_weights(const std::string& model_path, int tp, int text_ranks, at::ScalarType dtype,
                                bool fp8_transformer) {
  WeightEstimate w;
  std::vector<std::string> components;
  if (DIR* d = ::opendir(model_path.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != ".." && has_safetensors(io::join_path(model_path, n))) components.push_back(n);
    }
    ::closedir(d);
  }
  const int64_t run_size = static_cast<int64_t>(c10::elementSize(dtype));
  for (const auto& c : components) {
    auto store = io::TensorStore::open_dir(io::join_path(model_path, c));
    int64_t bytes = 0;
    for (const auto& key : store->keys()) {
      const auto& info = store->info(key);
      int64_t n = 1;
      for (int64_t s : info.shape) n *= s;
      // Floating-point tensors are held in the run dtype, others as stored.
      const bool fp = info.dtype[0] == 'F' || info.dtype == "BF16";
      // --fp8: the transformer's 2-D weights (its linears) at one byte each (their scales are negligible).
      const bool fp8 = fp8_transformer && c == "transformer" && fp && info.shape.size() == 2;
      bytes += n * (fp8 ? 1 : fp ? std::max<int64_t>(run_size, 1) : element_size(info.dtype));
    }
    if (c == "transformer") bytes /= std::max(tp, 1);
    if (c == "text_encoder") bytes /= std::max(text_ranks, 1);
    w.bytes[c] = bytes;
  }
  // The memory plan (lib/pipeline/runner.cpp) holds the text encoder and the transformer at different
  // times: the peak of the weights is the larger of the two stages (everything when the plan is off).
  int64_t all = 0;
  for (const auto& [c, b] : w.bytes) all += b;
  const auto part = [&](const char* c) { return w.bytes.count(c) ? w.bytes.at(c) : int64_t{0}; };
  const char* plan = std::getenv("DITGEN_MEMORY_PLAN");
  const bool planned = !(plan && std::string(plan) == "off");
  w.total = planned ? std::max(all - part("transformer"), all - part("text_encoder")) : all;
  return w;
}

void check_weights_fit(const WeightEstimate& w, const Room& room, int ranks_on_host) {
  if (room.bytes < 0 || w.total == 0) return;
  const int sharing = room.bound == Room::Bound::Host ? std::max(ranks_on_host, 1) : 1;
  if (w.total * sharing <= room.bytes) return;
  std::string parts;
  for (const auto& [name, b] : w.bytes) parts += (parts.empty() ? "" : ", ") + name + " " + gib(b);
  fail("the weights need about {} at once on each rank ({}){} but {}: {}spread the transformer over more "
       "ranks (--tp), the text encoder over all ranks (--parallel-text), or run in a smaller --dtype",
       gib(w.total), parts,
       sharing > 1 ? fmt::format(", {} for the {} ranks on this host", gib(w.total * sharing), sharing) : "",
       room.describe(), room.raise_cap());
}

int64_t estimate_step_activations(const StepWork& work, const comm::MeshShape& mesh, at::ScalarType dtype) {
  const auto [M, K, N] = work.gemm_shape;
  if (M <= 0 || K <= 0 || N <= 0) return 0;
  const int64_t rows = (M + mesh.ulysses * mesh.ring - 1) / (mesh.ulysses * mesh.ring);
  const int64_t cols = (N + mesh.tp - 1) / mesh.tp;
  return 3 * rows * (K + cols) * static_cast<int64_t>(c10::elementSize(dtype));
}

void check_activations_fit(int64_t bytes, const Room& room, int ranks_on_host) {
  if (room.bytes < 0 || bytes == 0) return;
  const int sharing = room.bound == Room::Bound::Host ? std::max(ranks_on_host, 1) : 1;
  if (bytes * sharing <= room.bytes) return;
  fail("a denoising step needs about {} of activations on each rank{} but {} once the weights are loaded: "
       "{}reduce --height/--width (or --num-frames) or --batch-count, or spread the tokens over more ranks "
       "(--ulysses, --ring) and the model over --tp",
       gib(bytes),
       sharing > 1 ? fmt::format(" ({} for the {} ranks on this host)", gib(bytes * sharing), sharing) : "",
       room.describe(), room.raise_cap());
}

}  // namespace ditgen::pipeline
