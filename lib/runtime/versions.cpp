#include "lib/runtime/versions.h"

#include <fmt/format.h>
#include <mpi.h>
#include <torch/version.h>

#include "lib/io/video.h"

#ifdef DITGEN_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>
#endif

namespace ditgen::runtime {

std::string build_versions() {
  std::string s = fmt::format("LibTorch {}\n", TORCH_VERSION);
#ifdef DITGEN_CUDA
  s += fmt::format("CUDA runtime {}.{}\n", CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
  s += fmt::format("NCCL {}.{}.{}\n", NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH);
#else
  s += "CUDA not built in (CPU build)\nNCCL not built in (CPU build)\n";
#endif
  char mpi[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  if (MPI_Get_library_version(mpi, &len) == MPI_SUCCESS && len > 0) {
    std::string m(mpi, static_cast<size_t>(len));
    s += "MPI " + m.substr(0, m.find_first_of(",\n")) + "\n";  // the first clause: name and version
  }
  s += "FFmpeg " + io::ffmpeg_version();
  return s;
}

}  // namespace ditgen::runtime
