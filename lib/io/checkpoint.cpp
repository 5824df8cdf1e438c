#include "lib/io/checkpoint.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "lib/io/json.h"
#include "lib/io/output_files.h"
#include "lib/io/printable.h"
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

std::string real_path(const std::string& path) {
  char* r = realpath(path.c_str(), nullptr);
  DITGEN_CHECK(r != nullptr, "cannot resolve '{}': {}", printable(path), std::strerror(errno));
  std::string out = r;
  std::free(r);
  return out;
}

// The file that index entry `key` -> `shard` names: a plain name inside the component folder. No
// absolute path, no "..", and no symlink that leads out of the folder (real paths compared), so an index
// cannot make us read a file elsewhere.
std::string shard_path(const std::string& dir, const std::string& real_dir, const std::string& index_path,
                       const std::string& key, const std::string& shard) {
  const std::string entry =
      fmt::format("'{}': weight_map['{}'] = '{}'", printable(index_path), printable(key), printable(shard));
  DITGEN_CHECK(!shard.empty() && shard.find('\0') == std::string::npos, "{} is not a file name", entry);
  DITGEN_CHECK(shard[0] != '/', "{} is an absolute path; shards must be files inside '{}'", entry,
               printable(dir));
  for (size_t b = 0; b <= shard.size();) {
    const size_t e = std::min(shard.find('/', b), shard.size());
    DITGEN_CHECK(shard.compare(b, e - b, "..") != 0,
                 "{} leaves the folder through '..'; shards must be files inside '{}'", entry,
                 printable(dir));
    b = e + 1;
  }
  const std::string path = join_path(dir, shard);
  struct stat st {};
  DITGEN_CHECK(stat(path.c_str(), &st) == 0, "{} names shard '{}', which does not exist", entry,
               printable(path));
  DITGEN_CHECK(S_ISREG(st.st_mode), "{} names '{}', which is not a regular file", entry, printable(path));
  const std::string real = real_path(path);
  const std::string prefix = real_dir == "/" ? real_dir : real_dir + "/";
  DITGEN_CHECK(real.compare(0, prefix.size(), prefix) == 0,
               "{} resolves to '{}', outside the folder '{}' (a symlink out of it?)", entry, printable(real),
               printable(real_dir));
  return path;
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
  DITGEN_CHECK(indexes.size() == 1, "'{}' holds several index files ({} and {}); keep one", printable(dir),
               printable(indexes[0]), printable(indexes[1]));
  const std::string index_path = join_path(dir, indexes[0]);
  // A FIFO or folder named like an index would block or fail obscurely in the JSON reader.
  DITGEN_CHECK(file_exists(index_path), "'{}' is not a regular file", printable(index_path));
  auto j = read_json_file(index_path);
  DITGEN_CHECK(j.is_object(), "'{}' is not a JSON object with a 'weight_map'", printable(index_path));
  auto wm = j.find("weight_map");
  DITGEN_CHECK(wm != j.end() && wm->is_object(), "'{}' has no 'weight_map' object", printable(index_path));
  auto store = std::shared_ptr<TensorStore>(new TensorStore());
  store->location_ = dir;
  const std::string real_dir = real_path(dir);
  std::map<std::string, std::string> shard_paths;  // shard name in the index -> checked path
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    DITGEN_CHECK(it.value().is_string(), "'{}': weight_map['{}'] is {}, not a file name",
                 printable(index_path), printable(it.key()),
                 printable(it.value().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
    const std::string& shard = it.value().get_ref<const std::string&>();
    auto s = shard_paths.find(shard);
    if (s == shard_paths.end())
      s = shard_paths.emplace(shard, shard_path(dir, real_dir, index_path, it.key(), shard)).first;
    store->key_file_[it.key()] = s->second;
  }
  return store;
}

std::shared_ptr<TensorStore> TensorStore::open_files(const std::vector<std::string>& files) {
  auto store = std::shared_ptr<TensorStore>(new TensorStore());
  store->location_ = files.size() == 1 ? files[0] : files.front() + " (+" + std::to_string(files.size() - 1) + ")";
  for (const auto& path : files) {
    auto f = store->file(path);
    for (const auto& name : f->names()) {
      auto [it, inserted] = store->key_file_.emplace(name, path);
      DITGEN_CHECK(inserted, "tensor '{}' appears in both '{}' and '{}'", printable(name),
                   printable(it->second), printable(path));
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
  DITGEN_CHECK(it != key_file_.end(), "'{}' has no tensor '{}'", printable(location_), printable(key));
  return it->second;
}

const TensorInfo& TensorStore::info(const std::string& key) {
  const std::string& path = file_of(key);
  auto f = file(path);
  DITGEN_CHECK(f->has(key), "the index of '{}' puts tensor '{}' in '{}', but that file does not hold it",
               printable(location_), printable(key), printable(path));
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
