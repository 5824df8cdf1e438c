// Communicator argument checks that need no mpirun: the size-1 backend refuses what the MPI backend
// would refuse (or would misread) instead of passing it through, and the world refuses a timeout that
// could never expire. The MPI backend's own error paths run under mpirun (test/mpi_backend_tests.cmake).
#include <catch2/catch.hpp>
#include <cmath>

#include "lib/comm/communicator.h"
#include "lib/comm/launch.h"
#include "lib/runtime/error.h"

using namespace ditgen;

TEST_CASE("the size-1 communicator checks its arguments like a real backend", "[comm]") {
  auto c = comm::make_self_communicator("tp");
  at::Tensor x = at::arange(6, at::kFloat).reshape({2, 3});

  CHECK(at::equal(c->all_gather(x, 1, {3}), x));
  CHECK_THROWS_AS(c->all_gather(x, 1, {2}), Error);     // sizes disagree with the tensor
  CHECK_THROWS_AS(c->all_gather(x, 1, {3, 3}), Error);  // sizes for two ranks in a group of one

  auto out = c->all_to_all({x}, {{3, 2}});
  REQUIRE(out.size() == 1);
  CHECK(out[0].sizes() == at::IntArrayRef({3, 2}));
  CHECK_THROWS_AS(c->all_to_all({x}, {{4, 2}}), Error);  // 6 elements cannot fill 8

  at::Tensor recv = at::zeros({2, 3});
  c->send_recv(x, 0, recv, 0)->wait();
  CHECK(at::equal(recv, x));
  at::Tensor small = at::zeros({3});
  CHECK_THROWS_AS(c->send_recv(x, 0, small, 0), Error);  // copy_ would have broadcast or failed late
  at::Tensor wide = at::ones({1, 3});
  CHECK_THROWS_AS(c->send_recv(wide, 0, recv, 0), Error);  // ... or silently broadcast one row
  CHECK_THROWS_AS(c->send_recv(x, 1, recv, 0), Error);
  CHECK_THROWS_AS(c->broadcast(x, 1), Error);
}

TEST_CASE("a communication timeout that can never expire is refused", "[comm]") {
  comm::LaunchInfo single;
  CHECK_THROWS_AS(comm::make_world(single, false, std::nan("")), Error);
  CHECK_THROWS_AS(comm::make_world(single, false, 0.0), Error);
  CHECK(comm::make_world(single, false, 30.0)->size() == 1);
}
