#pragma once
// The one communicator interface (cf. MLX distributed::Group, c10d Backend).
//
// Rules every backend follows:
//  - Every rank of a group issues the same collectives, in the same order, with matching shapes.
//    Sizes that differ per rank (uneven sequence chunks) are computed from global quantities that
//    every rank knows; they are never cached per rank or exchanged lazily.
//  - Tensors live on the backend's device: CPU for MPI, the rank's GPU for NCCL. NCCL work runs on
//    the communicator's own stream; the caller's compute stream waits on an event, never the host.
//  - Every operation has a deadline (--comm-timeout). A peer that never arrives ends the whole job
//    with "[rank r/w][backend] op on group NAME {ranks} timed out after N s".
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

namespace ditgen::comm {

enum class ReduceOp { Sum, Avg, Max };

// An operation in flight; wait() makes its results usable on the caller's stream.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "tp {0,1}" style name used in error messages.
  virtual std::string name() const = 0;
  virtual std::string backend() const = 0;

  // Collective over this group: ranks with equal `color` form a new group, ordered by `key`.
  virtual std::shared_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  // In place.
  virtual void all_reduce(at::Tensor& t, ReduceOp op = ReduceOp::Sum) = 0;
  // Concatenation along `dim` of every rank's tensor; ranks may hold different lengths along `dim`
  // (`sizes[r]` is rank r's), all other dims equal.
  virtual at::Tensor all_gather(const at::Tensor& t, int64_t dim, const std::vector<int64_t>& sizes) = 0;
  // send[r] goes to rank r; returns recv[r] from rank r with shape recv_shapes[r]. All tensors share
  // one dtype.
  virtual std::vector<at::Tensor> all_to_all(const std::vector<at::Tensor>& send,
                                             const std::vector<std::vector<int64_t>>& recv_shapes) = 0;
  // Starts sending `send` to `dst` while receiving into `recv` (preallocated) from `src`.
  virtual std::unique_ptr<Work> send_recv(const at::Tensor& send, int dst, at::Tensor& recv, int src) = 0;
  virtual void broadcast(at::Tensor& t, int root) = 0;
  virtual void barrier() = 0;
};

// A group of one: every collective is the identity. Lets one process run the parallel code paths.
std::shared_ptr<Communicator> make_self_communicator(const std::string& name = "self");

}  // namespace ditgen::comm
