// FP8 checkpoints as published (lib/nn/fp8_source.h): F8_E4M3 weights dequantised with their scales
// exactly as torch's fp8.float() * scale, on every slice; the stored e4m3 handed to --fp8 as it is; the
// layouts' names; the refusals.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "lib/io/checkpoint.h"
#include "lib/nn/fp8_source.h"
#include "lib/runtime/error.h"
#include "test/unit/checkpoint_util.h"

using namespace ditgen;
using Catch::Contains;

namespace {

std::string temp_dir(const std::string& name) { return test::temp_dir("fp8_" + name); }
using test::randn;

std::shared_ptr<nn::CheckpointSource> open(const std::string& file) {
  return std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({file}));
}

at::Tensor load(nn::WeightSource& s, const std::string& key, std::vector<int64_t> shape,
                const io::Slice& slice = io::Slice::whole(), at::ScalarType dtype = at::kFloat) {
  return s.load(key, shape, slice, dtype, at::kCPU, nn::Init::Linear);
}

io::Slice slice(int dim, std::vector<std::pair<int64_t, int64_t>> ranges) {
  io::Slice s;
  s.dim = dim;
  s.ranges = std::move(ranges);
  return s;
}

at::Tensor cut(const at::Tensor& t, const io::Slice& s) {
  std::vector<at::Tensor> parts;
  for (auto [start, len] : s.ranges) parts.push_back(t.narrow(s.dim, start, len));
  return at::cat(parts, s.dim);
}

}  // namespace

TEST_CASE("e4m3 test helper: every code round-trips, halfway values go to the even code", "[fp8]") {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;  // NaN
    CHECK(test::e4m3_encode(test::e4m3_decode(static_cast<uint8_t>(c))) == c);
  }
  CHECK(test::e4m3_decode(0x7E) == 448.f);
  CHECK(test::e4m3_decode(0x01) == std::ldexp(1.f, -9));
  CHECK(test::e4m3_encode(1.0625f) == 0x38);   // between 1 (0x38) and 1.125 (0x39): even
  CHECK(test::e4m3_encode(1.1875f) == 0x3A);   // between 1.125 (0x39) and 1.25 (0x3A): even
  CHECK(test::e4m3_encode(-0.f) == 0x80);
}

TEST_CASE("FP8 weights with per-tensor and per-channel scales read as fp8.float() times scale, on every slice",
          "[fp8]") {
  const std::string dir = temp_dir("dequant");
  const int64_t N = 32, K = 48;
  const at::Tensor w_tensor = randn({N, K}, 1), w_channel = randn({N, K}, 2) * at::linspace(0.1, 3, N).view({-1, 1});
  auto [bits_t, scale_t] = test::quantize_e4m3(w_tensor, /*per_channel=*/false);
  auto [bits_c, scale_c] = test::quantize_e4m3(w_channel, /*per_channel=*/true);
  const at::Tensor bias = randn({N}, 3);
  // ComfyUI/ModelOpt names (weight_scale [], weight_scale [N, 1], an unused input_scale), ComfyUI's
  // legacy names (scale_weight [1], scale_input, the scaled_fp8 marker), a comfy_quant marker, and a
  // bias stored as F8 without a scale (LTX-2's files).
  const auto [bias_bits, bias_scale] = test::quantize_e4m3(bias.view({1, -1}), false);
  test::write_file(dir + "/w.safetensors",
                   {{"a.to_q.weight", test::f8(bits_t)},
                    {"a.to_q.weight_scale", test::stored(scale_t)},
                    {"a.to_q.input_scale", test::stored(at::full({}, 0.5f))},
                    {"a.to_q.comfy_quant", test::stored(at::ones({3}, at::kByte))},
                    {"a.to_q.bias", test::f8(bias_bits.view({-1}))},
                    {"b.ff.weight", test::f8(bits_c)},
                    {"b.ff.weight_scale", test::stored(scale_c.view({N, 1}))},
                    {"c.proj.weight", test::f8(bits_t)},
                    {"c.proj.scale_weight", test::stored(scale_t.view({1}))},
                    {"c.proj.scale_input", test::stored(at::full({1}, 1.0f))},
                    {"scaled_fp8", test::f8(at::zeros({0}, at::kByte))},
                    {"norm.weight", test::stored(at::ones({K}))}});
  auto src = open(dir + "/w.safetensors");
  const at::Tensor want_t = test::dequantize_e4m3(bits_t, scale_t);
  const at::Tensor want_c = test::dequantize_e4m3(bits_c, scale_c);
  CHECK(at::equal(load(*src, "a.to_q.weight", {N, K}), want_t));
  CHECK(at::equal(load(*src, "b.ff.weight", {N, K}), want_c));
  CHECK(at::equal(load(*src, "c.proj.weight", {N, K}), want_t));
  CHECK(at::equal(load(*src, "a.to_q.bias", {N}), test::dequantize_e4m3(bias_bits.view({-1}), at::ones({}))));
  // Tensor-parallel slices: rows (with their channels' scales), a fused layout's pieces, columns.
  for (const io::Slice& sl : {slice(0, {{8, 8}}), slice(0, {{0, 4}, {16, 4}, {28, 4}}), slice(1, {{0, 16}, {32, 8}})}) {
    CHECK(at::equal(load(*src, "b.ff.weight", {N, K}, sl), cut(want_c, sl)));
    CHECK(at::equal(load(*src, "a.to_q.weight", {N, K}, sl), cut(want_t, sl)));
  }
  // The model dtype: the float32 value rounded once.
  CHECK(at::equal(load(*src, "b.ff.weight", {N, K}, io::Slice::whole(), at::kBFloat16), want_c.to(at::kBFloat16)));
  (void)load(*src, "norm.weight", {K});
  // Scales, input scales and markers are no unexpected tensors once their weights are read.
  CHECK_NOTHROW(src->check_all_used());
  CHECK(src->expected_count() == 5);  // four weights and the bias: what a progress bar counts

  // --fp8: the stored bits as they are, one scale per output channel (a per-tensor one broadcast).
  auto src2 = open(dir + "/w.safetensors");
  auto f = src2->load_fp8("b.ff.weight", {N, K}, slice(0, {{8, 8}}), at::kCPU);
  REQUIRE(f.has_value());
  CHECK(at::equal(f->bits, bits_c.narrow(0, 8, 8)));
  CHECK(at::equal(f->scale, scale_c.narrow(0, 8, 8)));
  f = src2->load_fp8("a.to_q.weight", {N, K}, slice(1, {{0, 16}}), at::kCPU);
  REQUIRE(f.has_value());
  CHECK(at::equal(f->bits, bits_t.narrow(1, 0, 16)));
  CHECK(at::equal(f->scale, scale_t.expand({N})));
  CHECK_FALSE(src2->load_fp8("norm.weight", {K}, io::Slice::whole(), at::kCPU).has_value());
  CHECK_FALSE(src2->load_fp8("a.to_q.bias", {N}, io::Slice::whole(), at::kCPU).has_value());
}

TEST_CASE("FP8 checkpoints without any scale read e4m3 as it is, and refusals name the key", "[fp8]") {
  const std::string dir = temp_dir("refuse");
  const int64_t N = 16, K = 16;
  auto [bits, scale] = test::quantize_e4m3(randn({N, K}, 4), false);
  // A plain cast (no scales anywhere): the e4m3 values themselves.
  test::write_file(dir + "/plain.safetensors", {{"x.weight", test::f8(bits)}});
  CHECK(at::equal(load(*open(dir + "/plain.safetensors"), "x.weight", {N, K}),
                  test::dequantize_e4m3(bits, at::ones({}))));
  CHECK_FALSE(open(dir + "/plain.safetensors")->load_fp8("x.weight", {N, K}, io::Slice::whole(), at::kCPU).has_value());
  // A scaled file with one weight's scale missing.
  test::write_file(dir + "/missing.safetensors", {{"x.weight", test::f8(bits)},
                                                  {"x.weight_scale", test::stored(scale)},
                                                  {"y.weight", test::f8(bits)}});
  CHECK_THROWS_WITH(load(*open(dir + "/missing.safetensors"), "y.weight", {N, K}),
                    Contains("'y.weight'") && Contains("missing.safetensors") && Contains("without a scale") &&
                        Contains("y.weight_scale"));
  // Block scales, a scale on a BF16 weight, two scales for one weight, a non-finite scale.
  test::write_file(dir + "/block.safetensors",
                   {{"x.weight", test::f8(bits)}, {"x.weight_scale", test::stored(at::ones({2, 2}))}});
  CHECK_THROWS_WITH(load(*open(dir + "/block.safetensors"), "x.weight", {N, K}),
                    Contains("x.weight_scale") && Contains("[2, 2]") && Contains("not block scales"));
  test::write_file(dir + "/bf16.safetensors", {{"x.weight", test::stored(randn({N, K}, 5).to(at::kBFloat16))},
                                               {"x.weight_scale", test::stored(scale)}});
  CHECK_THROWS_WITH(load(*open(dir + "/bf16.safetensors"), "x.weight", {N, K}),
                    Contains("'x.weight'") && Contains("BF16") && Contains("x.weight_scale"));
  test::write_file(dir + "/two.safetensors", {{"x.weight", test::f8(bits)},
                                              {"x.weight_scale", test::stored(scale)},
                                              {"x.scale_weight", test::stored(scale)}});
  CHECK_THROWS_WITH(open(dir + "/two.safetensors"), Contains("two scales for 'x.weight'"));
  test::write_file(dir + "/nan.safetensors",
                   {{"x.weight", test::f8(bits)}, {"x.weight_scale", test::stored(at::full({}, NAN))}});
  CHECK_THROWS_WITH(load(*open(dir + "/nan.safetensors"), "x.weight", {N, K}),
                    Contains("x.weight_scale") && Contains("not finite"));
  // A NaN code (e4m3fn S.1111.111) in either form.
  at::Tensor nan_bits = bits.clone();
  nan_bits[3][5] = 0x7F;
  test::write_file(dir + "/nan_bits.safetensors", {{"x.weight", test::f8(nan_bits)}, {"x.weight_scale", test::stored(scale)}});
  CHECK_THROWS_WITH(load(*open(dir + "/nan_bits.safetensors"), "x.weight", {N, K}),
                    Contains("'x.weight'") && Contains("non-finite weights: 1 NaN"));
  CHECK_THROWS_WITH(open(dir + "/nan_bits.safetensors")->load_fp8("x.weight", {N, K}, io::Slice::whole(), at::kCPU),
                    Contains("'x.weight'") && Contains("NaN"));
  // A scale whose weight the model never reads is an unexpected tensor like any other.
  test::write_file(dir + "/orphan.safetensors", {{"x.weight", test::f8(bits)},
                                                 {"x.weight_scale", test::stored(scale)},
                                                 {"z.weight_scale", test::stored(scale)}});
  auto orphan = open(dir + "/orphan.safetensors");
  (void)load(*orphan, "x.weight", {N, K});
  CHECK_THROWS_WITH(orphan->check_all_used(), Contains("z.weight_scale"));
}
