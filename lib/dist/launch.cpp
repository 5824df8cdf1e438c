#include "lib/dist/launch.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdlib>

#include "lib/dist/mpi_communicator.h"
#include "lib/runtime/error.h"
#include "lib/runtime/log.h"

#ifdef DITGEN_CUDA
#include "lib/dist/nccl_communicator.h"
#endif

namespace ditgen::dist {

namespace {
bool g_mpi = false;

bool started_by_mpi_launcher() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}
}  // namespace

LaunchInfo launch(int* argc, char*** argv) {
  LaunchInfo info;
  if (started_by_mpi_launcher()) {
    MPI_Init(argc, argv);
    g_mpi = true;
    info.mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &info.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &info.world);
    // Errors come back as codes so that we can name the operation; we end the job ourselves.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  log::set_rank(info.rank, info.world);
  return info;
}

void shutdown() {
  if (!g_mpi) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void abort_job(int code) {
  if (!g_mpi) return;
  usleep(300 * 1000);  // let peers that hit the same check print their own message
  MPI_Abort(MPI_COMM_WORLD, code);
}

std::shared_ptr<Communicator> make_world(const LaunchInfo& info, bool cuda, double timeout_s) {
  if (info.world == 1) return make_self_communicator("world");
  if (cuda) {
#ifdef DITGEN_CUDA
    return make_nccl_world(timeout_s);
#else
    fail("GPU runs across ranks need the CUDA build (-DDITGEN_CUDA=ON)");
#endif
  }
  return make_mpi_world(timeout_s);
}

}  // namespace ditgen::dist
