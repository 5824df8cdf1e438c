#include "lib/comm/launch.h"

#include <ATen/Parallel.h>
#include <mpi.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "lib/comm/mpi_communicator.h"
#include "lib/runtime/error.h"
#include "lib/runtime/logging.h"

#ifdef DITGEN_CUDA
#include <c10/cuda/CUDAFunctions.h>

#include "lib/comm/host_staged.h"
#include "lib/comm/nccl_communicator.h"
#endif

namespace ditgen::comm {

namespace {
bool g_mpi = false;

bool started_by_mpi_launcher() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}

// Ranks on one host share its cores. Unless the user chose (OMP_NUM_THREADS), each rank's intra-op
// thread pool is capped at its share, so that ranks do not oversubscribe the cores: threads waiting
// at a parallel region's end spin, and a rank's spinning threads slow the ranks still computing. A
// rank bound to fewer cores than the host has (mpirun --bind-to) keeps the cores it is bound to.
void share_cores(const std::string& what) {
  if (std::getenv("OMP_NUM_THREADS")) return;
  MPI_Comm host = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &host),
            "MPI_Comm_split_type", what);
  int local = 1;
  mpi_check(MPI_Comm_size(host, &local), "MPI_Comm_size", what);
  mpi_check(MPI_Comm_free(&host), "MPI_Comm_free", what);
  cpu_set_t set;
  const int hardware = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int visible = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : hardware;
  const int share = visible < hardware ? visible : std::max(1, hardware / std::max(1, local));
  if (at::get_num_threads() > share) at::set_num_threads(share);
}
}  // namespace

LaunchInfo launch(int* argc, char*** argv) {
  LaunchInfo info;
  runtime::configure_logging(0, 1);  // errors before the rank is known: stderr, no rank prefix
  if (started_by_mpi_launcher()) {
    // Open MPI's own blocking waits (MPI_Init, MPI_Comm_split, MPI_Finalize) yield the core while
    // idle: CPU runs oversubscribe the cores, and a spinning rank slows the ones still computing.
    // Our own waits poll with back-off (mpi_wait). The user's setting, if any, wins.
    setenv("OMPI_MCA_mpi_yield_when_idle", "1", /*overwrite=*/0);
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
      spdlog::error("[mpi] MPI_Init failed");
      std::_Exit(2);
    }
    g_mpi = true;
    info.mpi = true;
    try {
      // Errors come back as codes so that we can name the operation; we end the job ourselves.
      const std::string what = "starting on group world";
      mpi_check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", what);
      mpi_check(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", what);
      mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &info.rank), "MPI_Comm_rank", what);
      mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &info.world), "MPI_Comm_size", what);
      share_cores(what);
    } catch (const Error& e) {  // before the caller's handler exists
      spdlog::error(e.what());
      abort_job(2);
    }
  }
  runtime::configure_logging(info.rank, info.world);  // level info; the command line may change it
  return info;
}

void shutdown() {
  if (!g_mpi) return;
  int finalized = 0;
  if (MPI_Finalized(&finalized) == MPI_SUCCESS && finalized) return;
  if (MPI_Finalize() != MPI_SUCCESS) spdlog::warn("[mpi] MPI_Finalize failed");
}

void abort_job(int code) {
  if (!g_mpi) return;
  usleep(300 * 1000);  // let peers that hit the same check print their own message
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort returned: end this rank at least; mpirun ends the others
}

CommBackend comm_backend_from_name(const std::string& name) {
  if (name == "auto") return CommBackend::Auto;
  if (name == "nccl") return CommBackend::Nccl;
  DITGEN_CHECK(name == "mpi", "--comm must be auto, nccl or mpi, got '{}'", name);
  return CommBackend::Mpi;
}

std::shared_ptr<Communicator> make_world(const LaunchInfo& info, bool cuda, double timeout_s, CommBackend backend) {
  // NaN would compare false against every deadline and wait forever.
  DITGEN_CHECK(timeout_s > 0, "--comm-timeout must be a positive number of seconds, got {}", timeout_s);
  if (info.world == 1) return make_self_communicator("world");
  if (!cuda) {
    DITGEN_CHECK(backend != CommBackend::Nccl, "--comm nccl needs GPU tensors (--device cuda); CPU ranks talk over MPI");
    return make_mpi_world(timeout_s);
  }
#ifdef DITGEN_CUDA
  // Every rank computes the same choice: the largest number of ranks on one host against its GPUs.
  int local = 1, most = 1;
  MPI_Comm host = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &host),
            "MPI_Comm_split_type", "choosing the GPU communicator");
  mpi_check(MPI_Comm_size(host, &local), "MPI_Comm_size", "choosing the GPU communicator");
  mpi_check(MPI_Comm_free(&host), "MPI_Comm_free", "choosing the GPU communicator");
  mpi_check(MPI_Allreduce(&local, &most, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce",
            "choosing the GPU communicator");
  const int gpus = static_cast<int>(c10::cuda::device_count());
  const bool shared = most > gpus;
  DITGEN_CHECK(!(shared && backend == CommBackend::Nccl),
               "--comm nccl: {} ranks run on a host with {} GPU(s), and NCCL takes one rank per GPU; use --comm mpi "
               "(or auto), or launch at most {} ranks per host", most, gpus, gpus);
  if (backend == CommBackend::Nccl || (backend == CommBackend::Auto && !shared)) return make_nccl_world(timeout_s);
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(info.rank % gpus));
  if (info.rank == 0)
    spdlog::info("{}: GPU tensors go over MPI through pinned host buffers", shared
                     ? fmt::format("{} ranks share {} GPU(s) on a host (NCCL takes one rank per GPU)", most, gpus)
                     : std::string("--comm mpi"));
  return make_host_staged(make_mpi_world(timeout_s));
#else
  fail("GPU runs across ranks need the CUDA build (-DDITGEN_CUDA=ON)");
#endif
}

}  // namespace ditgen::comm
