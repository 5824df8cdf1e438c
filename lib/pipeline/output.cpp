#include "lib/pipeline/output.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

#include "lib/io/json.h"
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

}  // namespace ditgen::pipeline
