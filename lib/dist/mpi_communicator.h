#pragma once
// MPI backend: CPU tensors, non-blocking MPI collectives polled against a deadline. This is how
// every mesh runs on a CPU-only machine (mpirun --oversubscribe) and how the NCCL backend
// bootstraps.
#include <mpi.h>

#include <memory>

#include "lib/dist/communicator.h"

namespace ditgen::dist {

// An MPI communicator with its members' world ranks, freed on destruction: the group part that the
// MPI and NCCL backends share. `label()` is "name {0,2,4,6}" for messages.
class MpiGroup {
 public:
  // Collective; `timeout_s` bounds the wait for every member to arrive.
  MpiGroup(MPI_Comm comm, std::string name, double timeout_s);
  ~MpiGroup();
  MpiGroup(const MpiGroup&) = delete;
  MpiGroup& operator=(const MpiGroup&) = delete;

  MPI_Comm comm() const { return comm_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  std::string label() const;
  // Collective: the sub-group of ranks with equal `color`, ordered by `key`. A barrier with the
  // timeout comes first, because MPI_Comm_split itself would wait forever for a missing rank.
  MPI_Comm split(int color, int key, const std::string& what) const;

 private:
  MPI_Comm comm_;
  std::string name_;
  double timeout_;
  int rank_ = 0, size_ = 1;
  std::vector<int> members_;
};

// The world communicator over MPI_COMM_WORLD.
std::shared_ptr<Communicator> make_mpi_world(double timeout_s);

// Waits for `requests` to complete, polling (with short sleeps, so oversubscribed ranks do not
// starve each other) until `timeout_s`; then throws ditgen::Error naming rank, group and op.
void mpi_wait(std::vector<MPI_Request>& requests, double timeout_s, const std::string& what);

}  // namespace ditgen::dist
