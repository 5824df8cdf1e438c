#include "lib/pipeline/model.h"

#include "lib/io/json.h"
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

at::Tensor model_timestep(float t, int64_t batch, at::ScalarType dtype, const at::Device& device) {
  at::Tensor q = at::full({batch}, t, at::TensorOptions().dtype(at::kFloat).device(device)).to(dtype);
  return q / 1000;
}

}  // namespace ditgen::pipeline
