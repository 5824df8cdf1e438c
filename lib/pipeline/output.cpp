#include "lib/pipeline/output.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>

#include "lib/io/json.h"
#include "lib/io/printable.h"
#include "lib/runtime/error.h"

#ifdef DITGEN_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#endif

namespace ditgen::pipeline {

std::pair<at::Device, at::ScalarType> resolve_device(const std::string& device_name, const std::string& dtype_name,
                                                     int rank) {
  int gpus = 0;
#ifdef DITGEN_CUDA
  gpus = static_cast<int>(c10::cuda::device_count());
#endif
  bool cuda;
  if (device_name == "auto") {
    cuda = gpus > 0;
  } else if (device_name == "cuda") {
    DITGEN_CHECK(gpus > 0, "--device cuda: this build has no CUDA or sees no GPU");
    cuda = true;
  } else {
    DITGEN_CHECK(device_name == "cpu", "--device must be cpu, cuda or auto, got '{}'", device_name);
    cuda = false;
  }
  at::Device device = cuda ? at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(rank % gpus)) : at::Device(at::kCPU);
  at::ScalarType dt;
  if (dtype_name == "auto") {
    dt = cuda ? at::kBFloat16 : at::kFloat;
  } else if (dtype_name == "bf16" || dtype_name == "bfloat16") {
    dt = at::kBFloat16;
  } else if (dtype_name == "fp16" || dtype_name == "float16") {
    dt = at::kHalf;
  } else if (dtype_name == "fp32" || dtype_name == "float32") {
    dt = at::kFloat;
  } else {
    fail("--dtype must be bf16, fp16, fp32 or auto, got '{}'", dtype_name);
  }
  DITGEN_CHECK(cuda || dt != at::kHalf,
               "--dtype fp16 runs on GPUs only (the CPU kernels lack half precision for several layers); use fp32 or "
               "bf16 on the CPU");
  // An fp32 run means fp32 arithmetic: no TF32 in matrix products or convolutions.
  if (dt == at::kFloat) {
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
  return {device, dt};
}

std::string device_description(const at::Device& device, int world) {
#ifdef DITGEN_CUDA
  if (device.is_cuda()) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, device.index()) == cudaSuccess)
      return fmt::format("{} x {}", prop.name, world);
  }
#endif
  return fmt::format("{} x {}", device.is_cuda() ? "cuda" : "cpu", world);
}

void check_image_size(int64_t height, int64_t width, int64_t m) {
  auto check = [m](const char* flag, int64_t v) {
    DITGEN_CHECK(v >= m, "{} {} is too small: the model needs at least {} pixels", flag, v, m);
    const int64_t lo = v / m * m;
    DITGEN_CHECK(v % m == 0, "{} {} is not a multiple of {} (the VAE's 2x2-patched latent grid); use {} or {}", flag, v,
                 m, lo, lo + m);
  };
  check("--height", height);
  check("--width", width);
}

std::string run_tag(const comm::Mesh& mesh, const nlohmann::json& cache, bool parallel_text, bool parallel_vae) {
  std::string tag = "C0";
  const bool cached = cache.is_object() && cache.contains("tag");
  if (cached) tag += "_" + cache["tag"].get<std::string>() + "_" + cache.value("calibrator_tag", std::string("T0O0"));
  const std::string mt = mesh.tag();
  if (!mt.empty()) tag += "_" + mt;
  if (parallel_text) tag += "_TEP";
  if (parallel_vae) tag += "_VAEP";
  if (cached) tag += "_S" + std::to_string(cache.value("name_cached_steps", int64_t{0}));
  return tag;
}

void make_dirs(const std::string& dir) {
  std::string partial;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      if (!partial.empty() && !io::dir_exists(partial))
        DITGEN_CHECK(mkdir(partial.c_str(), 0755) == 0 || errno == EEXIST, "cannot create output folder '{}': {}",
                     partial, std::strerror(errno));
    }
    if (i < dir.size()) partial += dir[i];
  }
}

bool output_names_file(const std::string& output) {
  const auto slash = output.find_last_of('/');
  const std::string last = slash == std::string::npos ? output : output.substr(slash + 1);
  const auto dot = last.find_last_of('.');
  const bool has_ext = dot != std::string::npos && dot > 0 && dot + 1 < last.size();
  return !output.empty() && !last.empty() && !io::dir_exists(output) && has_ext;
}

OutputPaths output_paths(const std::string& output, const std::string& model, int64_t height, int64_t width,
                         int64_t frames, const std::string& tag, int64_t batch, const std::string& ext) {
  // The name decides: a trailing '/' or an existing folder is a folder; a name with an extension must
  // carry the one written (and "x.jpg" silently becoming a folder surprised users); any other name is a
  // folder to create.
  const auto slash = output.find_last_of('/');
  const std::string last = slash == std::string::npos ? output : output.substr(slash + 1);
  const auto dot = last.find_last_of('.');
  const bool folder = !output_names_file(output);
  std::string base;  // path without the extension
  if (!folder) {
    std::string given = last.substr(dot + 1);
    for (auto& c : given) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    DITGEN_CHECK(given == ext,
                 "--output '{}': this model writes {}; give a .{} file name, or a folder (end it with '/' when its "
                 "name has a dot)",
                 output, ext == "mp4" ? "MP4 videos" : "PNG images", ext);
    base = output.substr(0, output.size() - ext.size() - 1);
    if (slash != std::string::npos && slash > 0) make_dirs(output.substr(0, slash));
  } else {
    const std::string dir = output.empty() ? "." : output;
    make_dirs(dir);
    const std::string size = frames > 0 ? fmt::format("{}x{}x{}", height, width, frames) : fmt::format("{}x{}", height, width);
    base = io::join_path(dir, fmt::format("{}.{}.{}", model, size, tag));
  }
  OutputPaths p;
  for (int64_t b = 0; b < batch; ++b) {
    p.stems.push_back(batch == 1 ? base : fmt::format("{}_{}", base, b));
    p.files.push_back(p.stems.back() + "." + ext);
  }
  p.report = base + ".json";
  return p;
}

void check_output_writable(const std::string& output, const std::string& ext) {
  const OutputPaths p = output_paths(output, "probe", 1, 1, 0, "C0", 1, ext);  // checks the name, makes the folder
  const auto slash = p.report.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : p.report.substr(0, std::max<size_t>(slash, 1));
  std::string probe = io::join_path(dir, ".ditgen_probe_XXXXXX");
  const int fd = ::mkstemp(&probe[0]);
  DITGEN_CHECK(fd >= 0, "--output '{}': cannot write in the folder '{}': {}", output, dir, std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}


namespace {

std::string real_or_empty(const std::string& path) {
  char* r = ::realpath(path.c_str(), nullptr);
  if (!r) return "";
  std::string out = r;
  std::free(r);
  return out;
}

std::string parent_of(const std::string& abs) {
  const auto slash = abs.find_last_of('/');
  return slash == 0 || slash == std::string::npos ? "/" : abs.substr(0, slash);
}

// The folder and the file name of a normalized path.
std::pair<std::string, std::string> split_name(const std::string& norm) {
  const auto slash = norm.find_last_of('/');
  return {norm.substr(0, std::max<size_t>(slash, 1)), norm.substr(slash + 1)};
}

}  // namespace

std::string normalized_path(const std::string& path) {
  std::vector<std::string> parts;
  for (size_t b = 0; b <= path.size();) {
    const size_t e = std::min(path.find('/', b), path.size());
    parts.push_back(path.substr(b, e - b));
    b = e + 1;
  }
  size_t last = parts.size();  // the last named component, kept as written
  for (size_t i = parts.size(); i-- > 0;)
    if (!parts[i].empty()) {
      last = i;
      break;
    }
  std::string cur = !path.empty() && path[0] == '/' ? "/" : real_or_empty(".");
  DITGEN_CHECK(!cur.empty(), "cannot resolve the current folder: {}", std::strerror(errno));
  bool real = true;  // `cur` exists and has no symlinks
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& c = parts[i];
    if (c.empty() || c == ".") continue;
    if (c == "..") {
      cur = parent_of(cur);  // the parent of a resolved folder is its real parent
      continue;
    }
    const std::string next = cur == "/" ? "/" + c : cur + "/" + c;
    if (i != last && real) {
      const std::string r = real_or_empty(next);
      if (!r.empty()) {
        cur = r;
        continue;
      }
      real = false;  // from here on the folders do not exist yet: names only
    }
    cur = next;
  }
  return cur;
}

std::string run_tag_pattern(const comm::Mesh& mesh, bool cache_on, bool parallel_text, bool parallel_vae) {
  return cache_on ? std::string("C0_*") : run_tag(mesh, nullptr, parallel_text, parallel_vae);
}

std::vector<LaunchFile> planned_outputs(const std::string& output, const std::string& model, int64_t height,
                                        int64_t width, int64_t frames, const std::string& tag, int64_t batch,
                                        const std::string& ext, bool save_frames, const std::string& source) {
  const OutputPaths p = output_paths(output, model, height, width, frames, tag, batch, ext);
  // Only an auto-made name carries the tag; a '*' the user wrote in a file name is a plain character.
  const bool wildcard = !output_names_file(output) && tag.find('*') != std::string::npos;
  std::vector<LaunchFile> out;
  for (size_t b = 0; b < p.files.size(); ++b) {
    out.push_back({p.files[b], source, wildcard});
    if (save_frames) {
      out.push_back({p.stems[b] + ".frames", source, wildcard});
      out.push_back({p.stems[b] + ".wav", source, wildcard});
    }
  }
  out.push_back({p.report, source + " (its report)", wildcard});
  return out;
}

void check_launch_files(const std::vector<LaunchFile>& outputs, const std::vector<LaunchFile>& inputs) {
  struct Entry {
    std::string folder, name;  // normalized
    const LaunchFile* file;
    bool input;
  };
  struct Pattern {
    std::string prefix, suffix;  // around the wildcard
    const LaunchFile* file;
  };
  auto where = [](const LaunchFile& f) { return fmt::format("{} ('{}')", f.source, io::printable(f.path)); };

  // Exact names: one map from the normalized path to its first claimant.
  std::unordered_map<std::string, const Entry*> exact;
  std::vector<Entry> entries;
  entries.reserve(outputs.size() + 2 * inputs.size());
  std::map<std::pair<dev_t, ino_t>, const LaunchFile*> input_inodes;
  for (const auto& f : inputs) {
    const std::string norm = normalized_path(f.path);
    const auto [folder, name] = split_name(norm);
    entries.push_back({folder, name, &f, true});
    const std::string real = real_or_empty(f.path);  // the file itself, through a symlink
    if (!real.empty() && real != norm) {
      const auto [rf, rn] = split_name(real);
      entries.push_back({rf, rn, &f, true});
    }
    struct stat st {};
    if (::stat(f.path.c_str(), &st) == 0) input_inodes.emplace(std::make_pair(st.st_dev, st.st_ino), &f);
  }
  // folder -> suffix length -> suffix -> patterns; wildcard outputs.
  std::unordered_map<std::string, std::map<size_t, std::unordered_map<std::string, std::vector<Pattern>>>> patterns;
  for (const auto& f : outputs) {
    const auto [folder, name] = split_name(normalized_path(f.path));
    const size_t star = f.wildcard ? name.find('*') : std::string::npos;
    if (star != std::string::npos) {
      patterns[folder][name.size() - star - 1][name.substr(star + 1)].push_back(
          {name.substr(0, star), name.substr(star + 1), &f});
      continue;
    }
    entries.push_back({folder, name, &f, false});
    struct stat st {};
    if (::stat(f.path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      auto it = input_inodes.find({st.st_dev, st.st_ino});
      DITGEN_CHECK(it == input_inodes.end(), "{} would overwrite {}, an input of this launch (the same file)",
                   where(f), where(*it->second));
    }
  }
  for (const auto& e : entries) {
    const std::string key = e.folder + "/" + e.name;
    const auto [it, fresh] = exact.emplace(key, &e);
    if (fresh) continue;
    const Entry& first = *it->second;
    if (first.input && e.input) continue;  // one input named twice (its path and its real path)
    if (first.input || e.input)
      fail("{} would overwrite {}, an input of this launch (both are '{}')", where(*(e.input ? first : e).file),
           where(*(e.input ? e : first).file), io::printable(key));
    fail("{} and {} write the same file '{}'; give them different names", where(*first.file), where(*e.file),
         io::printable(key));
  }

  // Wildcards: a pattern prefix*suffix claims every name that starts with prefix and ends with suffix.
  // Candidates are found through the suffix (each folder holds few suffix lengths), so this stays linear.
  auto matches = [](const Pattern& p, const std::string& name) {
    return name.size() >= p.prefix.size() + p.suffix.size() && name.compare(0, p.prefix.size(), p.prefix) == 0;
  };
  for (const auto& e : entries) {
    auto folder = patterns.find(e.folder);
    if (folder == patterns.end()) continue;
    for (const auto& [len, by_suffix] : folder->second) {
      if (len > e.name.size()) break;
      auto hit = by_suffix.find(e.name.substr(e.name.size() - len));
      if (hit == by_suffix.end()) continue;
      for (const auto& p : hit->second) {
        if (!matches(p, e.name)) continue;
        if (e.input)
          fail("{} may overwrite {}, an input of this launch (its name is known only after the run, and '{}' fits it)",
               where(*p.file), where(*e.file), io::printable(e.name));
        fail("{} and {} may write the same file '{}' (the first's name is known only after the run, and this "
             "name fits it); give them different names",
             where(*p.file), where(*e.file), io::printable(e.folder + "/" + e.name));
      }
    }
  }
  // Two patterns can name one file when one's prefix starts the other's and one's suffix ends the other's.
  for (const auto& [folder, by_len] : patterns) {
    for (const auto& [len, by_suffix] : by_len)
      for (const auto& [suffix, list] : by_suffix)
        for (const auto& p : list)
          for (const auto& [len2, by_suffix2] : by_len) {
            if (len2 > len) break;
            auto hit = by_suffix2.find(suffix.substr(len - len2));
            if (hit == by_suffix2.end()) continue;
            for (const auto& q : hit->second) {
              if (q.file == p.file) continue;
              const bool prefixes = p.prefix.compare(0, q.prefix.size(), q.prefix) == 0 ||
                                    q.prefix.compare(0, p.prefix.size(), p.prefix) == 0;
              DITGEN_CHECK(!prefixes,
                           "{} and {} may write the same file in '{}' (names known only after the run); give "
                           "them different names",
                           where(*q.file), where(*p.file), io::printable(folder));
            }
          }
  }
}


std::string prompt_file_summary_path(const std::string& output, const std::string& prompt_file) {
  std::string dir = output.empty() ? "." : output;
  if (output_names_file(output)) {  // its folder
    const auto slash = output.find_last_of('/');
    dir = slash == std::string::npos ? "." : output.substr(0, std::max<size_t>(slash, 1));
  }
  std::string stem = prompt_file.substr(prompt_file.find_last_of('/') + 1);
  if (const auto dot = stem.find_last_of('.'); dot != std::string::npos && dot > 0) stem = stem.substr(0, dot);
  return io::join_path(dir, stem + ".summary.json");
}

void check_named_outputs(const std::vector<PromptItem>& items, const std::string& output,
                         const std::string& prompt_file, const std::string& ext, int64_t batch, bool save_frames) {
  int shared = 0;
  for (const auto& item : items) shared += item.output.empty();
  DITGEN_CHECK(!output_names_file(output) || shared <= 1,
               "--output '{}' names one file, but {} items of --prompt-file {} have no \"output\" of their own: give "
               "a folder",
               io::printable(output), shared, io::printable(prompt_file));
  std::vector<LaunchFile> outputs;
  for (const auto& item : items) {
    const std::string& named = item.output.empty() ? output : item.output;
    if (!output_names_file(named)) continue;  // auto-named: the runner's check
    const std::string source = fmt::format("--prompt-file {} line {}{}", io::printable(prompt_file), item.line,
                                           item.output.empty() ? " (--output)" : "");
    for (auto& f : planned_outputs(named, "model", 1, 1, 0, "C0", batch, ext, save_frames, source))
      outputs.push_back(std::move(f));
  }
  outputs.push_back({prompt_file_summary_path(output, prompt_file), "the prompt-file summary"});
  check_launch_files(outputs, {{prompt_file, "--prompt-file"}});
}

}  // namespace ditgen::pipeline
