#pragma once
// The check every DiT's config makes of the mesh: heads are divided by TP first, then by Ulysses
// (docs/DESIGN.md §3).
#include <cstdint>

#include "lib/comm/mesh.h"

namespace ditgen::parallel {

// Fails at start-up, naming the number to change, if `tp` does not divide the transformer's `heads` or
// `ulysses` the heads each tp rank holds.
void check_head_split(int64_t heads, const comm::Mesh& mesh);

}  // namespace ditgen::parallel
