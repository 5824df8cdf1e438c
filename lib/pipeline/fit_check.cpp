#include "lib/pipeline/fit_check.h"

#include <dirent.h>

#include <cctype>
#include <cstdlib>
#include <vector>

#include "lib/io/checkpoint.h"
#include "lib/io/json.h"
#include "lib/io/report.h"
#include "lib/nn/offload.h"
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

}  // namespace

std::string block_of_key(const std::string& key) {
  // The first "<list>.<index>." with a list name of the models' block lists.
  static const char* lists[] = {"transformer_blocks.", "single_transformer_blocks.", "layers."};
  for (size_t at = 0;;) {  // at: the start of a name part
    for (const char* list : lists) {
      const std::string l = list;
      if (key.compare(at, l.size(), l) != 0) continue;
      size_t end = at + l.size();
      while (end < key.size() && std::isdigit(static_cast<unsigned char>(key[end]))) ++end;
      if (end > at + l.size() && end < key.size() && key[end] == '.') return key.substr(0, end + 1);
    }
    const size_t dot = key.find('.', at);
    if (dot == std::string::npos) return "";
    at = dot + 1;
  }
}

bool stays_on_device(const std::string& key) {
  const std::string t = "scale_shift_table";
  return key.size() >= t.size() && key.compare(key.size() - t.size(), t.size(), t) == 0;
}

WeightEstimate estimate_weights(const std::string& model_path, int tp, int text_ranks, at::ScalarType dtype,
                                bool fp8_transformer, int offload_depth) {
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
    // --offload streams the blocks of these two; the rest of them stays on the device.
    const bool streamed = offload_depth > 0 && (c == "transformer" || c == "text_encoder");
    int64_t bytes = 0;
    std::map<std::string, int64_t> blocks;
    for (const auto& key : store->keys()) {
      const auto& info = store->info(key);
      int64_t n = 1;
      for (int64_t s : info.shape) n *= s;
      // Floating-point tensors are held in the run dtype, others as stored.
      const bool fp = info.dtype[0] == 'F' || info.dtype == "BF16";
      // --fp8: the transformer's 2-D weights (its linears) at one byte each (their scales are negligible).
      const bool fp8 = fp8_transformer && c == "transformer" && fp && info.shape.size() == 2;
      const int64_t b = n * (fp8 ? 1 : fp ? std::max<int64_t>(run_size, 1) : element_size(info.dtype));
      const std::string block = streamed && !stays_on_device(key) ? block_of_key(key) : "";
      (block.empty() ? bytes : blocks[block]) += b;
    }
    const int ranks = c == "transformer" ? std::max(tp, 1) : c == "text_encoder" ? std::max(text_ranks, 1) : 1;
    int64_t host = 0, largest = 0;
    for (const auto& [name, b] : blocks) {
      host += b;
      largest = std::max(largest, b);
    }
    if (!blocks.empty()) bytes += largest * nn::BlockStreamer::device_buffers(offload_depth);  // in flight
    w.bytes[c] = bytes / ranks;
    if (streamed) w.host_bytes[c] = host / ranks;
  }
  // The memory plan (lib/pipeline/runner.cpp) holds the text encoder and the transformer at different
  // times: the peak of the weights is the larger of the two stages (everything when the plan is off).
  int64_t all = 0;
  for (const auto& [c, b] : w.bytes) all += b;
  const auto part = [&](const char* c) { return w.bytes.count(c) ? w.bytes.at(c) : int64_t{0}; };
  const char* plan = std::getenv("DITGEN_MEMORY_PLAN");
  const bool planned = !(plan && std::string(plan) == "off");
  w.total = planned ? std::max(all - part("transformer"), all - part("text_encoder")) : all;
  int64_t host_all = 0;
  for (const auto& [c, b] : w.host_bytes) {
    host_all += b;
    w.host_total = std::max(w.host_total, b);
  }
  if (!planned) w.host_total = host_all;
  return w;
}

void check_weights_fit(const WeightEstimate& w, const Room& room, int ranks_on_host) {
  const int ranks = std::max(ranks_on_host, 1);
  if (w.host_total > 0) {  // --offload: the streamed blocks of every rank on this host, in its memory
    // Blocks the GPU has room for stay there (lib/nn/offload.h): only the rest needs host memory.
    const int64_t stays = room.bound != Room::Bound::Host && room.bytes > 0
                              ? std::max<int64_t>(room.bytes - w.total - nn::BlockStreamer::kDefaultReserve, 0)
                              : 0;
    const int64_t need = std::max<int64_t>(w.host_total - stays, 0);
    const int64_t host = available_room(at::kCPU).bytes;
    std::string parts;
    for (const auto& [name, b] : w.host_bytes) parts += (parts.empty() ? "" : ", ") + name + " " + io::human_bytes(b);
    DITGEN_CHECK(host < 0 || need * ranks <= host,
                 "--offload keeps the streamed blocks in host memory: about {} at once on each rank ({}{}){} but the "
                 "host has only {} available: spread the model over more ranks (--tp, --parallel-text) or hosts, or "
                 "use --fp8 (half the bytes)",
                 io::human_bytes(need), parts, stays > 0 ? fmt::format("; {} of them stay on the GPU", io::human_bytes(stays)) : "",
                 ranks > 1 ? fmt::format(", {} for the {} ranks on this host", io::human_bytes(need * ranks), ranks) : "",
                 io::human_bytes(host));
  }
  if (room.bytes < 0 || w.total == 0) return;
  const int sharing = room.bound == Room::Bound::Host ? ranks : 1;
  if (w.total * sharing <= room.bytes) return;
  std::string parts;
  for (const auto& [name, b] : w.bytes) parts += (parts.empty() ? "" : ", ") + name + " " + io::human_bytes(b);
  const bool offloaded = w.host_total > 0;
  fail("the weights need about {} at once on each rank ({}{}){} but {}: {}spread the transformer over more "
       "ranks (--tp), the text encoder over all ranks (--parallel-text), or run in a smaller --dtype{}",
       io::human_bytes(w.total), parts, offloaded ? "; --offload: the blocks not counted but the ones in flight" : "",
       sharing > 1 ? fmt::format(", {} for the {} ranks on this host", io::human_bytes(w.total * sharing), sharing) : "",
       room.describe(), room.raise_cap(),
       room.bound != Room::Bound::Host && !offloaded ? ", or keep the blocks in host memory (--offload)" : "");
}

int64_t estimate_step_activations(const StepWork& work, const comm::MeshShape& mesh, at::ScalarType dtype) {
  const auto [M, K, N] = work.gemm_shape;
  if (M <= 0 || K <= 0 || N <= 0) return 0;
  const int64_t rows = (M + mesh.ulysses * mesh.ring - 1) / (mesh.ulysses * mesh.ring);
  const int64_t cols = (N + mesh.tp - 1) / mesh.tp;
  return 3 * rows * (K + cols) * static_cast<int64_t>(c10::elementSize(dtype));
}

bool activations_fit(int64_t bytes, const Room& room, int ranks_on_host) {
  const int sharing = room.bound == Room::Bound::Host ? std::max(ranks_on_host, 1) : 1;
  return room.bytes < 0 || bytes == 0 || bytes * sharing <= room.bytes;
}

void check_activations_fit(int64_t bytes, const Room& room, int ranks_on_host) {
  if (activations_fit(bytes, room, ranks_on_host)) return;
  const int sharing = room.bound == Room::Bound::Host ? std::max(ranks_on_host, 1) : 1;
  fail("a denoising step needs about {} of activations on each rank{} but {} once the weights are loaded: "
       "{}reduce --height/--width (or --num-frames) or --batch-count, or spread the tokens over more ranks "
       "(--ulysses, --ring) and the model over --tp",
       io::human_bytes(bytes),
       sharing > 1 ? fmt::format(" ({} for the {} ranks on this host)", io::human_bytes(bytes * sharing), sharing) : "",
       room.describe(), room.raise_cap());
}

}  // namespace ditgen::pipeline
