#include "lib/io/checkpoint.h"

#include <dirent.h>

#include <algorithm>

#include "lib/io/json.h"
#include "lib/io/report.h"
#include "lib/runtime/error.h"

namespace ditgen::io {

namespace {
std::vector<std::string> list_dir(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  DITGEN_CHECK(d != nullptr, "cannot open folder '{}'", dir);
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(n);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

std::shared_ptr<TensorStore> TensorStore::open_dir(const std::string& dir) {
  DITGEN_CHECK(dir_exists(dir), "checkpoint folder '{}' does not exist", dir);
  auto indexes = list_dir(dir, ".safetensors.index.json");
  if (indexes.empty()) {
    auto files = list_dir(dir, ".safetensors");
    DITGEN_CHECK(!files.empty(), "'{}' holds no *.safetensors file and no *.safetensors.index.json", dir);
    for (auto& f : files) f = join_path(dir, f);
    auto store = open_files(files);
    store->location_ = dir;
    return store;
  }
  DITGEN_CHECK(indexes.size() == 1, "'{}' holds several index files ({} and {}); keep one", dir, indexes[0],
               indexes[1]);
  const std::string index_path = join_path(dir, indexes[0]);
  auto j = read_json_file(index_path);
  auto wm = j.find("weight_map");
  DITGEN_CHECK(wm != j.end() && wm->is_object(), "'{}' has no 'weight_map' object", index_path);
  auto store = std::shared_ptr<TensorStore>(new TensorStore());
  store->location_ = dir;
  std::set<std::string> shard_files;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    DITGEN_CHECK(it.value().is_string(), "'{}': weight_map['{}'] is not a file name", index_path, it.key());
    const std::string path = join_path(dir, it.value().get<std::string>());
    store->key_file_[it.key()] = path;
    shard_files.insert(path);
  }
  for (const auto& f : shard_files)
    DITGEN_CHECK(file_exists(f), "'{}' names shard '{}', which does not exist", index_path, f);
  return store;
}

std::shared_ptr<TensorStore> TensorStore::open_files(const std::vector<std::string>& files) {
  auto store = std::shared_ptr<TensorStore>(new TensorStore());
  store->location_ = files.size() == 1 ? files[0] : files.front() + " (+" + std::to_string(files.size() - 1) + ")";
  for (const auto& path : files) {
    auto f = store->file(path);
    for (const auto& name : f->names()) {
      auto [it, inserted] = store->key_file_.emplace(name, path);
      DITGEN_CHECK(inserted, "tensor '{}' appears in both '{}' and '{}'", name, it->second, path);
    }
  }
  return store;
}

std::shared_ptr<SafetensorsFile> TensorStore::file(const std::string& path) {
  auto it = files_.find(path);
  if (it != files_.end()) return it->second;
  auto f = SafetensorsFile::open(path);
  files_[path] = f;
  return f;
}

const std::string& TensorStore::file_of(const std::string& key) const {
  auto it = key_file_.find(key);
  DITGEN_CHECK(it != key_file_.end(), "'{}' has no tensor '{}'", location_, key);
  return it->second;
}

const TensorInfo& TensorStore::info(const std::string& key) {
  const std::string& path = file_of(key);
  auto f = file(path);
  DITGEN_CHECK(f->has(key), "the index of '{}' puts tensor '{}' in '{}', but that file does not hold it",
               location_, key, path);
  return f->info(key);
}

at::Tensor TensorStore::read(const std::string& key, const Slice& slice, at::ScalarType dtype,
                             const at::Device& device) {
  info(key);  // validates presence
  return file(file_of(key))->read(key, slice, dtype, device);
}

std::vector<std::string> TensorStore::keys() const {
  std::vector<std::string> out;
  for (const auto& kv : key_file_) out.push_back(kv.first);
  return out;
}

uint64_t TensorStore::bytes_read() const {
  uint64_t n = 0;
  for (const auto& kv : files_) n += kv.second->bytes_read();
  return n;
}

void write_component(const std::string& dir, const std::string& stem, const std::map<std::string, at::Tensor>& tensors,
                     int shards) {
  if (shards <= 1) {
    write_safetensors(join_path(dir, stem + ".safetensors"), tensors);
    return;
  }
  std::vector<std::map<std::string, at::Tensor>> parts(static_cast<size_t>(shards));
  int i = 0;
  for (const auto& kv : tensors) parts[static_cast<size_t>(i++ % shards)].insert(kv);
  nlohmann::json index;
  uint64_t total = 0;
  for (int s = 0; s < shards; ++s) {
    const std::string name = fmt::format("{}-{:05d}-of-{:05d}.safetensors", stem, s + 1, shards);
    write_safetensors(join_path(dir, name), parts[static_cast<size_t>(s)]);
    for (const auto& kv : parts[static_cast<size_t>(s)]) {
      index["weight_map"][kv.first] = name;
      total += static_cast<uint64_t>(kv.second.numel() * kv.second.element_size());
    }
  }
  index["metadata"] = {{"total_size", total}};
  write_file_atomic(join_path(dir, stem + ".safetensors.index.json"), index.dump(2) + "\n");
}

}  // namespace ditgen::io
