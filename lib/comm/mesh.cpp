#include "lib/comm/mesh.h"

#include <fmt/format.h>

#include "lib/runtime/error.h"

namespace ditgen::comm {

const std::vector<std::string>& preset_names() {
  static const std::vector<std::string> names = {"tp",         "ulysses",    "ring",    "usp",    "ulysses_tp",
                                                 "tp_ulysses", "ring_tp",    "tp_ring", "usp_tp"};
  return names;
}

MeshShape preset_shape(const std::string& p, int w) {
  MeshShape s;
  auto need_even = [&] {
    DITGEN_CHECK(w >= 4 && w % 2 == 0,
                 "--parallel {} combines two axes and needs an even world size of at least 4, got {} ranks "
                 "(run with mpirun -np 4 or more, or choose tp/ulysses/ring)",
                 p, w);
  };
  if (p == "tp") {
    s.tp = w;
  } else if (p == "ulysses") {
    s.ulysses = w;
  } else if (p == "ring") {
    s.ring = w;
  } else if (p == "usp") {
    DITGEN_CHECK(w >= 4, "--parallel usp needs at least 4 ranks, got {}", w);
    s.ulysses = std::max(1, w / 2);
    s.ring = w / s.ulysses;
    DITGEN_CHECK(s.ulysses * s.ring == w, "--parallel usp cannot split {} ranks into ulysses x ring", w);
  } else if (p == "ulysses_tp") {
    need_even();
    s.ulysses = w / 2;
    s.tp = 2;
  } else if (p == "tp_ulysses") {
    need_even();
    s.tp = w / 2;
    s.ulysses = 2;
  } else if (p == "ring_tp") {
    need_even();
    s.ring = w / 2;
    s.tp = 2;
  } else if (p == "tp_ring") {
    need_even();
    s.tp = w / 2;
    s.ring = 2;
  } else if (p == "usp_tp") {
    DITGEN_CHECK(w == 8, "--parallel usp_tp means ulysses 2 x ring 2 x tp 2 and needs exactly 8 ranks, got {}; "
                 "use --ulysses/--ring/--tp for other sizes", w);
    s.ulysses = 2;
    s.ring = 2;
    s.tp = 2;
  } else {
    std::string names;
    for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    fail("unknown --parallel '{}' (choose one of: {})", p, names);
  }
  return s;
}

MeshShape resolve_shape(const std::string& preset, int ulysses, int ring, int tp, int cfg, int world) {
  MeshShape s;
  if (!preset.empty()) {
    const int halves = cfg > 1 ? cfg : 1;
    DITGEN_CHECK(world % halves == 0, "--cfg {} splits the ranks into {} halves, but {} ranks were launched", cfg,
                 halves, world);
    s = preset_shape(preset, world / halves);
  }
  if (ulysses > 0) s.ulysses = ulysses;
  if (ring > 0) s.ring = ring;
  if (tp > 0) s.tp = tp;
  if (cfg > 0) s.cfg = cfg;
  return s;
}

Mesh::Mesh(MeshShape shape, int world, int rank) : shape_(shape), world_(world), rank_(rank) {
  DITGEN_CHECK(shape.cfg >= 1 && shape.ring >= 1 && shape.ulysses >= 1 && shape.tp >= 1,
               "mesh sizes must be >= 1 (got cfg {}, ring {}, ulysses {}, tp {})", shape.cfg, shape.ring,
               shape.ulysses, shape.tp);
  DITGEN_CHECK(shape.cfg == 1 || shape.cfg == 2, "--cfg must be 1 or 2, got {}", shape.cfg);
  DITGEN_CHECK(shape.size() == world,
               "the mesh cfg {} x ring {} x ulysses {} x tp {} = {} ranks does not match the {} launched "
               "ranks: change --ring/--ulysses/--tp/--cfg or mpirun -np",
               shape.cfg, shape.ring, shape.ulysses, shape.tp, shape.size(), world);
  DITGEN_CHECK(rank >= 0 && rank < world, "rank {} outside world of {}", rank, world);
}

std::vector<int> Mesh::tp_group() const {
  std::vector<int> g;
  for (int t = 0; t < shape_.tp; ++t) g.push_back(rank_of(cfg_index(), ring_index(), ulysses_index(), t));
  return g;
}
std::vector<int> Mesh::ulysses_group() const {
  std::vector<int> g;
  for (int u = 0; u < shape_.ulysses; ++u) g.push_back(rank_of(cfg_index(), ring_index(), u, tp_index()));
  return g;
}
std::vector<int> Mesh::ring_group() const {
  std::vector<int> g;
  for (int r = 0; r < shape_.ring; ++r) g.push_back(rank_of(cfg_index(), r, ulysses_index(), tp_index()));
  return g;
}
std::vector<int> Mesh::cp_group() const {
  std::vector<int> g;
  for (int r = 0; r < shape_.ring; ++r)
    for (int u = 0; u < shape_.ulysses; ++u) g.push_back(rank_of(cfg_index(), r, u, tp_index()));
  return g;
}
std::vector<int> Mesh::cfg_group() const {
  std::vector<int> g;
  for (int c = 0; c < shape_.cfg; ++c) g.push_back(rank_of(c, ring_index(), ulysses_index(), tp_index()));
  return g;
}
std::string Mesh::tag() const {
  std::string t;
  auto add = [&](const char* name, int v) {
    if (v > 1) t += (t.empty() ? "" : "_") + fmt::format("{}{}", name, v);
  };
  if (shape_.ring > 1 && shape_.ulysses > 1) {
    t = fmt::format("USP{}x{}", shape_.ulysses, shape_.ring);
  } else {
    add("Ulysses", shape_.ulysses);
    add("Ring", shape_.ring);
  }
  add("TP", shape_.tp);
  add("CFG", shape_.cfg);
  return t;
}

std::string Mesh::describe() const {
  return fmt::format("cfg {} x ring {} x ulysses {} x tp {}", shape_.cfg, shape_.ring, shape_.ulysses, shape_.tp);
}

std::vector<int64_t> split_sizes(int64_t n, int parts) {
  std::vector<int64_t> s(parts, n / parts);
  for (int i = 0; i < n % parts; ++i) s[i] += 1;
  return s;
}

}  // namespace ditgen::comm
