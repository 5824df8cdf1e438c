#pragma once
// All rank arithmetic lives here (cf. TensorRT-LLM WorldConfig). Axes (cfg, ring, ulysses, tp),
// row-major, TP innermost: rank = ((c*R + r)*U + u)*T + t. The sequence chunk of a rank is
// r*U + u; TP peers hold the same chunk. Nobody else computes `rank / tp % ulysses`.
#include <string>
#include <vector>

namespace ditgen::comm {

struct MeshShape {
  int cfg = 1, ring = 1, ulysses = 1, tp = 1;
  int size() const { return cfg * ring * ulysses * tp; }
  bool operator==(const MeshShape& o) const {
    return cfg == o.cfg && ring == o.ring && ulysses == o.ulysses && tp == o.tp;
  }
};

// The --parallel presets with cache-dit's size rules for world size `world`; throws ditgen::Error
// naming the preset and the world size when they do not fit.
MeshShape preset_shape(const std::string& preset, int world);
const std::vector<std::string>& preset_names();
// The mesh the command line asks for: the preset's shape (if any; with --cfg 2 it divides each half
// of the ranks, as xDiT's cfg_degree), then each explicit degree > 0 overriding its axis; unset axes
// are 1.
MeshShape resolve_shape(const std::string& preset, int ulysses, int ring, int tp, int cfg, int world);

class Mesh {
 public:
  Mesh() = default;
  // Validates every axis >= 1 and shape.size() == world.
  Mesh(MeshShape shape, int world, int rank);

  const MeshShape& shape() const { return shape_; }
  int rank() const { return rank_; }
  int world() const { return world_; }

  int cfg_index() const { return rank_ / (shape_.ring * shape_.ulysses * shape_.tp); }
  int ring_index() const { return rank_ / (shape_.ulysses * shape_.tp) % shape_.ring; }
  int ulysses_index() const { return rank_ / shape_.tp % shape_.ulysses; }
  int tp_index() const { return rank_ % shape_.tp; }

  int cp_size() const { return shape_.ring * shape_.ulysses; }
  int cp_index() const { return ring_index() * shape_.ulysses + ulysses_index(); }  // sequence chunk
  int model_size() const { return shape_.ring * shape_.ulysses * shape_.tp; }      // ranks of one DiT replica

  int rank_of(int c, int r, int u, int t) const {
    return ((c * shape_.ring + r) * shape_.ulysses + u) * shape_.tp + t;
  }

  // Global ranks of this rank's groups, in group order.
  std::vector<int> tp_group() const;
  std::vector<int> ulysses_group() const;
  std::vector<int> ring_group() const;
  std::vector<int> cp_group() const;     // ring x ulysses, ordered by chunk index
  std::vector<int> cfg_group() const;

  // Split colors: ranks with equal color share the group.
  int tp_color() const { return (cfg_index() * shape_.ring + ring_index()) * shape_.ulysses + ulysses_index(); }
  int ulysses_color() const { return (cfg_index() * shape_.ring + ring_index()) * shape_.tp + tp_index(); }
  int ring_color() const { return (cfg_index() * shape_.ulysses + ulysses_index()) * shape_.tp + tp_index(); }
  int cp_color() const { return cfg_index() * shape_.tp + tp_index(); }
  // The cfg group pairs the ranks that hold the same part of the model in the two CFG halves.
  int cfg_color() const { return (ring_index() * shape_.ulysses + ulysses_index()) * shape_.tp + tp_index(); }

  // "Ulysses4_TP2" style tag (empty for one process), as in cache-dit's output names.
  std::string tag() const;
  // "ring 1 x ulysses 4 x tp 2" for messages.
  std::string describe() const;

 private:
  MeshShape shape_;
  int world_ = 1;
  int rank_ = 0;
};

// Chunk lengths of a length-n sequence over `parts` ranks: the first n % parts get one more
// (torch.tensor_split semantics). Every rank computes the same vector.
std::vector<int64_t> split_sizes(int64_t n, int parts);

}  // namespace ditgen::comm
