#pragma once
// NCCL backend (CUDA build only): GPU tensors, bootstrapped by an MPI broadcast of the unique id,
// sub-groups by MPI_Comm_split + a fresh NCCL communicator. Each communicator owns a stream; the
// caller's stream waits on an event after each operation (no host synchronisation). A watchdog
// thread ends the job when an operation has not completed within the timeout.
#include <memory>

#include "lib/comm/communicator.h"

namespace ditgen::comm {

std::shared_ptr<Communicator> make_nccl_world(double timeout_s);

}  // namespace ditgen::comm
