// Loader, weight sharding and mesh arithmetic.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>

#include "lib/comm/mesh.h"
#include "lib/io/checkpoint.h"
#include "lib/io/safetensors.h"
#include "lib/nn/weights.h"
#include "lib/runtime/error.h"

using namespace ditgen;

namespace {
std::string tmp_path(const std::string& name) { return "/tmp/ditgen_test_" + std::to_string(getpid()) + "_" + name; }

void write_raw(const std::string& path, const std::string& header, const std::vector<uint8_t>& data) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}
}  // namespace

TEST_CASE("safetensors slice reads return exactly the requested rows and columns", "[io]") {
  const std::string path = tmp_path("slice.safetensors");
  at::Tensor w = at::arange(6 * 4, at::kFloat).reshape({6, 4});
  io::write_safetensors(path, {{"w", w}, {"b", w.to(at::kBFloat16)}});
  auto f = io::SafetensorsFile::open(path);
  io::Slice rows{0, {{1, 2}, {4, 1}}};
  at::Tensor r = f->read("w", rows, at::kFloat, at::kCPU);
  CHECK(at::equal(r, at::cat({w.narrow(0, 1, 2), w.narrow(0, 4, 1)}, 0)));
  CHECK(f->bytes_read() == 3 * 4 * 4);
  io::Slice cols{1, {{2, 2}}};
  CHECK(at::equal(f->read("w", cols, at::kFloat, at::kCPU), w.narrow(1, 2, 2)));
  CHECK(at::equal(f->read("b", io::Slice::whole(), at::kFloat, at::kCPU), w));  // BF16 -> F32
  std::remove(path.c_str());
}

TEST_CASE("F8_E4M3 tensors are upcast on read", "[io]") {
  const std::string path = tmp_path("f8.safetensors");
  // 0x38 = 1.0, 0x40 = 2.0, 0xC0 = -2.0, 0x01 = 2^-9 (subnormal), 0x7E = 448
  write_raw(path, R"({"x":{"dtype":"F8_E4M3","shape":[5],"data_offsets":[0,5]}})", {0x38, 0x40, 0xC0, 0x01, 0x7E});
  at::Tensor x = io::SafetensorsFile::open(path)->read("x");
  CHECK(x[0].item<float>() == 1.0f);
  CHECK(x[1].item<float>() == 2.0f);
  CHECK(x[2].item<float>() == -2.0f);
  CHECK(x[3].item<float>() == Approx(1.0 / 512));
  CHECK(x[4].item<float>() == 448.0f);
  std::remove(path.c_str());
}

TEST_CASE("truncated and corrupt safetensors files fail with the file and the key", "[io]") {
  const std::string path = tmp_path("bad.safetensors");
  write_raw(path, R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", {0, 0, 0, 0});
  CHECK_THROWS_WITH(io::SafetensorsFile::open(path), Catch::Contains("is truncated") && Catch::Contains("'x'"));
  write_raw(path, R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", std::vector<uint8_t>(12));
  CHECK_THROWS_WITH(io::SafetensorsFile::open(path), Catch::Contains("needs 16 bytes"));
  write_raw(path, "{not json", {});
  CHECK_THROWS_WITH(io::SafetensorsFile::open(path), Catch::Contains("not valid JSON"));
  std::ofstream(path) << "abc";
  CHECK_THROWS_WITH(io::SafetensorsFile::open(path), Catch::Contains("too short"));
  std::remove(path.c_str());
}

TEST_CASE("declared weights: missing, mis-shaped and unexpected tensors are errors", "[io]") {
  const std::string path = tmp_path("weights.safetensors");
  io::write_safetensors(path, {{"a.weight", at::zeros({4, 2})}, {"extra", at::zeros({1})}});
  auto src = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({path}));
  nn::Weights wb(src, at::kFloat, at::kCPU);
  CHECK_THROWS_WITH(wb.get("b.weight", {4, 2}), Catch::Contains("missing tensor 'b.weight'"));
  CHECK_THROWS_WITH(wb.get("a.weight", {2, 4}), Catch::Contains("has shape [4, 2] but the model config needs [2, 4]"));
  CHECK(wb.get("a.weight", {4, 2}).sizes() == at::IntArrayRef({4, 2}));
  CHECK_THROWS_WITH(src->check_all_used(), Catch::Contains("unexpected tensor(s)") && Catch::Contains("extra"));
  std::remove(path.c_str());
}

TEST_CASE("fused sharding gives each rank its piece of every segment", "[io]") {
  // Rows [q 4 | k 4 | v 4 | gate 6 | up 6] over 2 ranks: rank 1 holds q[2:4], k[2:4], v[2:4], gate[3:6], up[3:6].
  auto src = std::make_shared<nn::RandomSource>(3);
  nn::Weights full(src, at::kFloat, at::kCPU);
  nn::Weights r1 = full.with_tp({1, 2});
  const nn::Shard fused = nn::Shard::rows({4, 4, 4, 6, 6});
  at::Tensor all = full.get("w", {24, 3}, fused);
  at::Tensor mine = r1.get("w", {24, 3}, fused);
  at::Tensor want = at::cat({all.narrow(0, 2, 2), all.narrow(0, 6, 2), all.narrow(0, 10, 2), all.narrow(0, 15, 3),
                             all.narrow(0, 21, 3)});
  CHECK(at::equal(mine, want));
  CHECK_THROWS_WITH(full.with_tp({0, 4}).get("w", {24, 3}, fused), Catch::Contains("cannot be divided over 4"));
}

TEST_CASE("mesh rank arithmetic: TP innermost, then Ulysses, then Ring", "[mesh]") {
  // Ulysses-4 x TP-2 on 8 ranks: TP pairs {0,1},{2,3}...; Ulysses groups {0,2,4,6} and {1,3,5,7}.
  comm::Mesh m(comm::preset_shape("ulysses_tp", 8), 8, 5);
  CHECK(m.shape().ulysses == 4);
  CHECK(m.shape().tp == 2);
  CHECK(m.tp_group() == std::vector<int>{4, 5});
  CHECK(m.ulysses_group() == std::vector<int>{1, 3, 5, 7});
  CHECK(m.cp_index() == 2);
  comm::Mesh usp(comm::preset_shape("usp_tp", 8), 8, 6);  // ring 2 x ulysses 2 x tp 2
  CHECK(usp.ring_index() == 1);
  CHECK(usp.ulysses_index() == 1);
  CHECK(usp.tp_index() == 0);
  CHECK(usp.cp_index() == 3);
  CHECK(usp.ring_group() == std::vector<int>{2, 6});
  CHECK(usp.cp_group() == std::vector<int>{0, 2, 4, 6});
  CHECK(comm::preset_shape("usp", 8).ulysses == 4);
  CHECK(comm::preset_shape("usp", 8).ring == 2);
  CHECK(comm::preset_shape("tp_ring", 8).tp == 4);
  CHECK(m.tag() == "Ulysses4_TP2");
}

TEST_CASE("invalid meshes name the number to change", "[mesh]") {
  CHECK_THROWS_WITH(comm::Mesh(comm::MeshShape{1, 1, 4, 1}, 2, 0), Catch::Contains("does not match the 2 launched ranks"));
  CHECK_THROWS_WITH(comm::preset_shape("usp_tp", 4), Catch::Contains("needs exactly 8 ranks"));
  CHECK_THROWS_WITH(comm::preset_shape("ulysses_tp", 2), Catch::Contains("at least 4"));
  CHECK_THROWS_WITH(comm::preset_shape("bogus", 2), Catch::Contains("unknown --parallel 'bogus'"));
}

TEST_CASE("uneven sequence chunks follow tensor_split", "[mesh]") {
  CHECK(comm::split_sizes(13, 4) == std::vector<int64_t>{4, 3, 3, 3});
  CHECK(comm::split_sizes(3, 8) == std::vector<int64_t>{1, 1, 1, 0, 0, 0, 0, 0});
}
