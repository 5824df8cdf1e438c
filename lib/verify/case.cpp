#include "lib/verify/case.h"

#include "lib/io/json.h"
#include "lib/runtime/error.h"

namespace ditgen::verify {

Case::Case(const std::string& dir) : dir_(dir) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  name_ = d.substr(d.find_last_of('/') + 1);
  if (io::file_exists(file("io.safetensors"))) io_ = io::SafetensorsFile::open(file("io.safetensors"));
  config_ = io::file_exists(file("config.json")) ? io::read_json_file(file("config.json")) : nlohmann::json::object();
  case_json_ = io::file_exists(file("case.json")) ? io::read_json_file(file("case.json")) : nlohmann::json::object();
}

std::string Case::file(const std::string& name) const { return io::join_path(dir_, name); }

at::Tensor Case::tensor(const std::string& key) const {
  DITGEN_CHECK(io_ && io_->has(key), "case '{}': io.safetensors has no tensor '{}'", dir_, key);
  return io_->read(key);
}

double Case::scalar(const std::string& key) const {
  auto s = case_json_.find("scalars");
  DITGEN_CHECK(s != case_json_.end() && s->contains(key), "case '{}': case.json has no scalar '{}'", dir_, key);
  return (*s)[key].get<double>();
}

}  // namespace ditgen::verify
