#include "lib/pipeline/model.h"

#include <algorithm>

#include "lib/io/json.h"
#include "lib/nn/offload.h"
#include "lib/pipeline/memory_limit.h"
#include "lib/runtime/metrics.h"
#include "lib/io/printable.h"
#include "lib/pipeline/settings_check.h"
#include "lib/runtime/error.h"

namespace ditgen::pipeline {

Latents Model::guide(const Latents&, const Latents&, const Settings&) const {
  fail("{}: this model runs no classifier-free guidance branches", name());
}

nlohmann::json folder_defaults(const std::string& model_path, const nlohmann::json& fallback) {
  const std::string path = io::join_path(model_path, kPresetsFile);
  if (!io::file_exists(path)) return fallback;
  const std::string where = "'" + io::printable(path) + "'";
  const nlohmann::json j = io::read_json_file(path);  // strict: depth, duplicate keys, size
  DITGEN_CHECK(j.is_object() && j.contains("defaults") && j["defaults"].is_object(),
               "{}: expected an object with a 'defaults' object", where);
  for (const auto& kv : j.items())
    DITGEN_CHECK(kv.key() == "defaults", "{}: unknown key \"{}\" (a presets file holds only \"defaults\")", where,
                 io::printable(kv.key()));
  // The command line's rules (settings_check.h): a presets file is one more source of the same settings.
  check_preset_defaults(j["defaults"], where + " defaults");
  nlohmann::json d = fallback;
  d.update(j["defaults"]);  // keys it does not name keep the real model's defaults
  return d;
}

void ModelBase::load_deferred() {
  if (!load_transformer_) return;
  auto load = std::move(load_transformer_);
  load_transformer_ = nullptr;
  load();
}

void ModelBase::on_step(int64_t step, int64_t steps) const {
  cache_.on_step(step, steps);
  // The transformer's offload counts cover one run: they restart with its first step.
  for (const auto& s : streamed_) {
    if (s.component != "transformer") continue;
    if (step == 0) {
      if (auto streamer = s.streamer.lock()) streamer->reset_counts();
      s.stats->reset_counts();
    }
    ++s.stats->steps;
  }
}

std::shared_ptr<nn::BlockStreamer> ModelBase::offload_streamer(const std::string& component, const at::Device& device) {
  if (!offload_) return nullptr;
  auto streamer = nn::make_streamer(true, device);
  // On a GPU the blocks the room allows stay resident (the room measured with the freed cache returned).
  if (device.is_cuda())
    streamer->set_room([device] {
      runtime::return_freed_memory(device);
      return available_room(device).bytes;
    }, offload_reserve_ >= 0 ? offload_reserve_ : nn::BlockStreamer::kDefaultReserve);
  streamed_.push_back({component, streamer, streamer->shared_stats()});
  return streamer;
}

std::vector<std::pair<std::string, nn::OffloadStats>> ModelBase::offload_stats() const {
  std::vector<std::pair<std::string, nn::OffloadStats>> out;
  for (const auto& s : streamed_) {
    const auto streamer = s.streamer.lock();
    out.emplace_back(s.component, streamer ? streamer->stats() : *s.stats);
  }
  // The transformer first: its numbers are the ones a run is about.
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.first == "transformer" && b.first != "transformer";
  });
  return out;
}

nlohmann::json ModelBase::offload_report() const {
  if (streamed_.empty()) return nullptr;
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [component, stats] : offload_stats()) j[component] = stats.to_json();
  return j;
}

std::string ModelBase::offload_summary() const {
  std::string s;
  for (const auto& [component, stats] : offload_stats())
    s += fmt::format("{}{}: {}", s.empty() ? "offload " : "; ", component, stats.summary());
  return s;
}

at::Tensor model_timestep(float t, int64_t batch, at::ScalarType dtype, const at::Device& device) {
  at::Tensor q = at::full({batch}, t, at::TensorOptions().dtype(at::kFloat).device(device)).to(dtype);
  return q / 1000;
}

}  // namespace ditgen::pipeline
