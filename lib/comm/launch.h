#pragma once
// Process launch: detects mpirun, initialises MPI (and NCCL for GPU runs), builds the world
// communicator and the parallel context, and ends the whole job cleanly on errors.
#include <memory>
#include <string>

#include "lib/comm/communicator.h"
#include "lib/comm/mesh.h"

namespace ditgen::comm {

struct LaunchInfo {
  int rank = 0;
  int world = 1;
  bool mpi = false;  // started by mpirun (MPI initialised)
};

// Initialises MPI when the process was started by an MPI launcher (MPI errors returned as codes,
// Open MPI yielding while idle, each rank's intra-op threads capped at its share of the host's cores
// unless OMP_NUM_THREADS says otherwise); sets up logging for the rank (runtime::configure_logging). Ends the
// job if MPI cannot start.
LaunchInfo launch(int* argc, char*** argv);
// MPI_Finalize when it was initialised.
void shutdown();
// Ends every rank of the job after this rank printed its error: a short grace period so that
// peers failing the same check print theirs, then MPI_Abort. Returns only without MPI.
void abort_job(int code);

// --comm: how GPU ranks talk. NCCL needs one GPU per rank; MPI passes GPU tensors through pinned host
// buffers and serves ranks that share a GPU. Auto: NCCL unless a host runs more ranks than it has GPUs.
enum class CommBackend { Auto, Nccl, Mpi };
CommBackend comm_backend_from_name(const std::string& name);  // "auto", "nccl" or "mpi"

// The world communicator for tensors on `cuda ? GPU : CPU`: NCCL (bootstrapped over MPI) or MPI
// (host-staged for GPU tensors, as `backend` and the ranks per host decide; rank 0 says which once),
// or a self communicator for one process. `timeout_s` bounds every operation; it must be > 0.
std::shared_ptr<Communicator> make_world(const LaunchInfo& info, bool cuda, double timeout_s,
                                         CommBackend backend = CommBackend::Auto);

}  // namespace ditgen::comm
