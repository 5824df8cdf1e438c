#include "lib/parallel/head_split.h"

#include "lib/runtime/error.h"

namespace ditgen::parallel {

void check_head_split(int64_t heads, const comm::Mesh& mesh) {
  const int tp = mesh.shape().tp, u = mesh.shape().ulysses;
  DITGEN_CHECK(heads % tp == 0,
               "--tp {} does not divide the transformer's {} attention heads; choose a tp that divides {}",
               tp, heads, heads);
  const int64_t local = heads / tp;
  DITGEN_CHECK(
      local % u == 0,
      "--ulysses {} does not divide the {} heads each tp rank holds ({} heads / tp {}); choose ulysses "
      "and tp whose product divides {}",
      u, local, heads, tp, heads);
}

}  // namespace ditgen::parallel
