#pragma once
// MPI backend: CPU tensors, non-blocking MPI collectives polled against a deadline. This is how
// every mesh runs on a CPU-only machine (mpirun --oversubscribe) and how the NCCL backend
// bootstraps.
//
// Every communicator returns MPI's errors as codes (MPI_ERRORS_RETURN) and every call's code is
// checked: a failure throws ditgen::Error "[mpi] op on group NAME {ranks}: MPI_Xxx failed: <MPI's
// error string>" (the log line adds "[rank r/w]").
#include <ATen/ATen.h>
#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "lib/comm/communicator.h"

namespace ditgen::comm {

// Throws ditgen::Error when `rc` (returned by MPI function `call`) is not MPI_SUCCESS; `what` is
// "op on group NAME {ranks}".
void mpi_check(int rc, const char* call, const std::string& what);

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
  int member(int r) const { return members_.at(static_cast<size_t>(r)); }  // world rank of group rank r
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

// Waits for `requests` to complete until `timeout_s`, then throws ditgen::Error naming the op
// (`what`); an MPI error in any request throws at once. Polls with exponential back-off (a few
// immediate polls, then sleeps from 4 us doubling to 1 ms) so that waiting ranks leave the cores to
// the ranks still computing: CPU runs oversubscribe the cores. Large exchanges (the bytes of
// `in_flight`) first poll without sleeping, yielding the core, for as long as they could take at 250 MB/s
// (at most 2 s): MPI moves their fragments only while the rank polls. When it throws, the tensors in
// `in_flight` (the buffers MPI may still write into or read from) are deliberately leaked: freeing
// them under a pending request would corrupt the heap while the job ends.
void mpi_wait(std::vector<MPI_Request>& requests, double timeout_s, const std::string& what,
              const std::vector<at::Tensor>& in_flight = {});

}  // namespace ditgen::comm
