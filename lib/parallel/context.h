#pragma once
// What a model sees of the parallel world: the mesh and one communicator per axis. Models never call
// a communicator directly; they call the entry points below (sequence split/gather, context-parallel
// attention, tensor-parallel reduction), which are the identity on one process.
#include <ATen/ATen.h>

#include <functional>

#include <memory>
#include <vector>

#include "lib/comm/communicator.h"
#include "lib/comm/mesh.h"
#include "lib/nn/weights.h"

namespace ditgen::parallel {

class Context {
 public:
  // One process: every group has size 1.
  static std::shared_ptr<Context> single();
  // Splits `world` into the mesh's groups (collective over `world`).
  static std::shared_ptr<Context> create(std::shared_ptr<comm::Communicator> world, const comm::MeshShape& shape);

  const comm::Mesh& mesh() const { return mesh_; }
  comm::Communicator& world() const { return *world_; }
  comm::Communicator& tp() const { return *tp_; }
  comm::Communicator& ulysses() const { return *ulysses_; }
  comm::Communicator& ring() const { return *ring_; }
  comm::Communicator& cp() const { return *cp_; }
  comm::Communicator& cfg() const { return *cfg_; }  // the two CFG halves' peers
  nn::TpGroup tp_group() const { return {mesh_.tp_index(), mesh_.shape().tp}; }
  // TE-P (--parallel-text): the text encoder is tensor-parallel over every rank of the world, whatever the
  // mesh; under --cfg 2 too (each rank then encodes both branches' prompts), so that each rank holds 1/world
  // of the encoder rather than 2/world. The world communicator itself: no extra group to create.
  comm::Communicator& text_tp() const { return *world_; }
  nn::TpGroup text_tp_group() const { return {mesh_.rank(), mesh_.world()}; }

 private:
  comm::Mesh mesh_;
  std::shared_ptr<comm::Communicator> world_, tp_, ulysses_, ring_, cp_, cfg_;
};

// ---- context parallelism -------------------------------------------------------------------------

// Lengths of every CP rank's chunk of a length-n sequence (uneven allowed), indexed by chunk.
std::vector<int64_t> chunk_sizes(int64_t n, const Context& ctx);
// This rank's chunk of `x` along `dim` (no communication).
at::Tensor split_sequence(const at::Tensor& x, int64_t dim, const Context& ctx);
// The full sequence from every CP rank's chunk along `dim`; `full_len` is the global length.
at::Tensor gather_sequence(const at::Tensor& x, int64_t dim, int64_t full_len, const Context& ctx);

// Non-causal attention over the sequence spread across the CP group.
// q, k, v: [B, S_local, H_local, D] with H_local = H / tp; `local_lens[i]` is the local sequence
// length of CP chunk i (every rank passes the same vector). Ulysses turns sequence chunks into head
// groups with one all-to-all each way; Ring passes K/V round the ring and merges partial results
// with their log-sum-exp in fp32, sending the next block while computing the current one.
// `key_masks` (optional) hides keys: key_masks[i] is CP chunk i's [B, local_lens[i]] bool on the CPU
// (true = visible), the same on every rank; a mask follows its keys wherever Ulysses or Ring moves them.
// Returns [B, S_local, H_local, D].
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::vector<int64_t>& local_lens, const Context& ctx,
                     const std::vector<at::Tensor>& key_masks = {});

// Attention of this rank's queries over keys/values of another token stream that is split over the CP
// group on its own (LTX-2's audio <-> video attention): K/V are gathered from every CP rank (they are
// rotated before, so positions stay right), then attended locally. q [B, Sq_loc, h, D]; k, v
// [B, Sk_loc, h, D] with `kv_full_len` tokens over the group. Returns [B, Sq_loc, h, D].
at::Tensor attention_gathered_kv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t kv_full_len,
                                 const Context& ctx);

// Whether `mine` holds on every rank of `group` (collective over it, through a tensor on `device`). Ranks that
// decide alone whether to keep a tensor that saves work (by their free memory) would otherwise run different
// collectives, or compute the same values in different ways.
bool on_every_rank(bool mine, comm::Communicator& group, const at::Device& device);

// ---- tensor parallelism --------------------------------------------------------------------------

// Sums a row-parallel layer's partial outputs over the TP group (in place).
void tp_all_reduce(at::Tensor& partial, const Context& ctx);
// tp_all_reduce as a function for nn::linear_residual; empty without TP (nothing to sum: the residual may
// then join the GEMM).
std::function<void(at::Tensor&)> tp_sum_of(const Context& ctx);

}  // namespace ditgen::parallel
