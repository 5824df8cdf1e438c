#pragma once
// One component of a diffusers-format checkpoint (transformer/, vae/, text_encoder/): a set of
// safetensors files and the key -> file map from `*.safetensors.index.json`. Files are opened lazily,
// so a rank maps only the shards holding tensors it reads.
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "lib/io/safetensors.h"

namespace ditgen::io {

class TensorStore {
 public:
  // A component folder: the `*.safetensors.index.json` in it if there is one, else its single
  // `*.safetensors` file(s).
  static std::shared_ptr<TensorStore> open_dir(const std::string& dir);
  // One or more safetensors files (keys must be unique across them).
  static std::shared_ptr<TensorStore> open_files(const std::vector<std::string>& files);

  bool has(const std::string& key) const { return key_file_.count(key) != 0; }
  const TensorInfo& info(const std::string& key);
  const std::string& file_of(const std::string& key) const;
  at::Tensor read(const std::string& key, const Slice& slice, at::ScalarType dtype, const at::Device& device);
  std::vector<std::string> keys() const;

  uint64_t bytes_read() const;
  const std::string& location() const { return location_; }  // the folder or file, for messages

 private:
  std::shared_ptr<SafetensorsFile> file(const std::string& path);
  std::string location_;
  std::map<std::string, std::string> key_file_;                    // key -> file path
  std::map<std::string, std::shared_ptr<SafetensorsFile>> files_;  // opened on first use
};

// Writes `tensors` as a diffusers component: `{stem}.safetensors`, or with shards > 1 the files
// `{stem}-0000i-of-0000n.safetensors` and their `{stem}.safetensors.index.json` (how export-tiny makes
// folders that exercise the real checkpoint path).
void write_component(const std::string& dir, const std::string& stem, const std::map<std::string, at::Tensor>& tensors,
                     int shards);

}  // namespace ditgen::io
