#pragma once
// GPU tensors over a CPU (MPI) communicator, for ranks that share a GPU: NCCL refuses two ranks on one
// device, so those meshes pass their tensors through pinned host buffers instead (launch.h picks it).
#include <memory>

#include "lib/comm/communicator.h"

namespace ditgen::comm {

// Wraps `cpu` (an MPI communicator) so that its operations also take tensors on a GPU: copied to host
// memory, exchanged, copied back. CPU tensors pass straight through. Groups split from it are staged too.
std::shared_ptr<Communicator> make_host_staged(std::shared_ptr<Communicator> cpu);

}  // namespace ditgen::comm
