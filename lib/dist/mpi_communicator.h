#pragma once
// MPI backend: CPU tensors, non-blocking MPI collectives polled against a deadline. This is how
// every mesh runs on a CPU-only machine (mpirun --oversubscribe) and how the NCCL backend
// bootstraps.
#include <mpi.h>

#include <memory>

#include "lib/dist/communicator.h"

namespace ditgen::dist {

// The world communicator over MPI_COMM_WORLD.
std::shared_ptr<Communicator> make_mpi_world(double timeout_s);

// Waits for `requests` to complete, polling (with short sleeps, so oversubscribed ranks do not
// starve each other) until `timeout_s`; then throws ditgen::Error naming rank, group and op.
void mpi_wait(std::vector<MPI_Request>& requests, double timeout_s, const std::string& what);

}  // namespace ditgen::dist
