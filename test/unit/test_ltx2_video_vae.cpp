// LTX-2 video VAE: config parsing and refusals, the two sub-pixel orders on hand-built tensors, the
// de-normalisation, random-weight decoders (the real layout at reduced width, and the optional paths),
// the parameter count of the real config, the decoder against the ltx2_video_vae fixture (fp32, bf16), the
// encoder (its sub-pixel orders, parameter count, the ltx2_video_vae_encode fixture) and the image-to-video
// initial latents against the i2v pipeline fixture.
#include <catch2/catch.hpp>
#include <map>

#include "lib/io/checkpoint.h"
#include "lib/io/json.h"
#include "lib/nn/weights.h"
#include "lib/runtime/error.h"
#include "lib/verify/case.h"
#include "lib/verify/compare.h"
#include "models/ltx2/image_latents.h"
#include "models/ltx2/vae.h"
#include "test/unit/fixtures.h"

using namespace ditgen;
using namespace ditgen::ltx2;

namespace {

VideoVaeConfig parse(const std::string& text) {
  return VideoVaeConfig::from_json(nlohmann::json::parse(text), "vae/config.json");
}

VideoVae random_vae(const VideoVaeConfig& config, at::ScalarType dtype = at::kFloat,
                    bool with_encoder = false) {
  return VideoVae(config, nn::Weights(std::make_shared<nn::RandomSource>(11), dtype, at::kCPU), with_encoder);
}

std::shared_ptr<nn::CheckpointSource> fixture_source(
    const verify::Case& c, std::vector<std::string> ignore = VideoVae::unread_keys(),
    const std::string& file = "weights.safetensors") {
  return std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file(file)}), "",
                                                std::move(ignore));
}

// The pipelines' preprocessing of an RGB8 image [H, W, 3]: uint8 / 255 in fp32, then 2x - 1, as [1, 3, H, W].
at::Tensor pixels(const at::Tensor& rgb8) {
  return rgb8.to(at::kFloat).div(255.0).mul(2.0).sub(1.0).permute({2, 0, 1}).unsqueeze(0).contiguous();
}

bool all_finite(const at::Tensor& t) { return at::isfinite(t).all().item<bool>(); }

}  // namespace

TEST_CASE("ltx2 video vae: config defaults are the real LTX-2.0 values", "[ltx2][video_vae]") {
  const VideoVaeConfig c = VideoVaeConfig::from_json(nlohmann::json::object(), "vae/config.json");
  CHECK(c.out_channels == 3);
  CHECK(c.latent_channels == 128);
  CHECK(c.decoder_block_out_channels == std::vector<int64_t>({256, 512, 1024}));
  CHECK(c.decoder_layers_per_block == std::vector<int64_t>({5, 5, 5, 5}));
  CHECK(c.decoder_spatio_temporal_scaling == std::vector<bool>({true, true, true}));
  CHECK(c.decoder_inject_noise == std::vector<bool>({false, false, false, false}));
  CHECK(c.upsample_type == std::vector<std::string>({"spatiotemporal", "spatiotemporal", "spatiotemporal"}));
  CHECK(c.upsample_residual == std::vector<bool>({true, true, true}));
  CHECK(c.upsample_factor == std::vector<int64_t>({2, 2, 2}));
  CHECK_FALSE(c.timestep_conditioning);
  CHECK(c.patch_size == 4);
  CHECK(c.patch_size_t == 1);
  CHECK(c.resnet_norm_eps == 1e-6);
  CHECK(c.scaling_factor == 1.0);
  CHECK_FALSE(c.decoder_causal);
  CHECK(c.decoder_spatial_padding_mode == "reflect");
  CHECK(c.spatial_ratio() == 32);
  CHECK(c.temporal_ratio() == 8);
  CHECK(c.pixel_frames(16) == 121);

  // The real file states the ratios and a few encoder keys (ignored); single booleans expand.
  const VideoVaeConfig real = parse(R"({"spatial_compression_ratio": 32, "temporal_compression_ratio": 8,
    "encoder_causal": true, "encoder_spatial_padding_mode": "zeros", "block_out_channels": [256, 512, 1024, 2048],
    "decoder_inject_noise": false, "upsample_residual": true, "decoder_spatio_temporal_scaling": true})");
  CHECK(real.decoder_inject_noise == std::vector<bool>(4, false));
  CHECK(real.upsample_residual == std::vector<bool>(3, true));
  CHECK(real.spatial_ratio() == 32);
}

TEST_CASE("ltx2 video vae: config errors name the file and the key", "[ltx2][video_vae]") {
  using Catch::Contains;
  CHECK_THROWS_WITH(parse(R"({"timestep_conditioning": true})"),
                    Contains("vae/config.json") && Contains("timestep_conditioning"));
  CHECK_THROWS_WITH(parse(R"({"decoder_inject_noise": [false, true, false, false]})"),
                    Contains("vae/config.json") && Contains("decoder_inject_noise"));
  CHECK_THROWS_WITH(parse(R"({"decoder_inject_noise": true})"), Contains("decoder_inject_noise"));
  CHECK_THROWS_WITH(parse(R"({"upsample_factor": [2, 2]})"), Contains("upsample_factor"));
  CHECK_THROWS_WITH(parse(R"({"decoder_layers_per_block": [5, 5, 5]})"), Contains("decoder_layers_per_block"));
  CHECK_THROWS_WITH(parse(R"({"upsample_type": ["spatiotemporal", "upwards", "spatial"]})"),
                    Contains("upsample_type") && Contains("upwards"));
  CHECK_THROWS_WITH(parse(R"({"decoder_spatial_padding_mode": "circular"})"),
                    Contains("decoder_spatial_padding_mode"));
  CHECK_THROWS_WITH(parse(R"({"patch_size_t": 2})"), Contains("patch_size_t"));
  CHECK_THROWS_WITH(parse(R"({"spatial_compression_ratio": 16})"), Contains("spatial_compression_ratio"));
  CHECK_THROWS_WITH(parse(R"({"temporal_compression_ratio": 4})"), Contains("temporal_compression_ratio"));
  // Up block 1 would change 1024 -> 256 channels with factor 2, which upstream cannot build.
  CHECK_THROWS_WITH(parse(R"({"decoder_block_out_channels": [256, 512, 2048]})"),
                    Contains("decoder_block_out_channels"));
  CHECK_THROWS_WITH(parse(R"({"latent_channels": 0})"), Contains("latent_channels"));
  CHECK_THROWS_WITH(parse(R"({"upsample_factor": [2, 0, 2]})"), Contains("upsample_factor"));
  CHECK_THROWS_WITH(parse(R"({"scaling_factor": 0})"), Contains("scaling_factor"));
  CHECK_THROWS_WITH(parse(R"({"decoder_causal": "no"})"), Contains("decoder_causal"));
  CHECK_THROWS_WITH(parse("[]"), Contains("vae/config.json"));
}

TEST_CASE("ltx2 video vae: depth-to-space order and first-frame drop", "[ltx2][video_vae]") {
  // Input channel c*8 + t*4 + h*2 + w at (f, y, x) holds a code of all seven indices.
  const int64_t C = 2, F = 2, H = 2, W = 3;
  at::Tensor x = at::empty({1, C * 8, F, H, W});
  const auto code = [](int64_t c, int64_t t, int64_t h, int64_t w, int64_t f, int64_t y, int64_t xx) {
    return static_cast<float>(c * 1000000 + t * 100000 + h * 10000 + w * 1000 + f * 100 + y * 10 + xx);
  };
  auto xa = x.accessor<float, 5>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t t = 0; t < 2; ++t)
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t w = 0; w < 2; ++w)
          for (int64_t f = 0; f < F; ++f)
            for (int64_t y = 0; y < H; ++y)
              for (int64_t xx = 0; xx < W; ++xx) xa[0][c * 8 + t * 4 + h * 2 + w][f][y][xx] = code(c, t, h, w, f, y, xx);

  at::Tensor out = video_depth_to_space(x, 2, 2, 2).contiguous();
  REQUIRE(out.sizes() == at::IntArrayRef({1, C, 2 * F - 1, 2 * H, 2 * W}));
  auto oa = out.accessor<float, 5>();
  int64_t mismatches = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t fo = 0; fo < 2 * F - 1; ++fo)
      for (int64_t yo = 0; yo < 2 * H; ++yo)
        for (int64_t xo = 0; xo < 2 * W; ++xo) {
          const int64_t full = fo + 1;  // frame (f, t) = (0, 0) is dropped
          if (oa[0][c][fo][yo][xo] != code(c, full % 2, yo % 2, xo % 2, full / 2, yo / 2, xo / 2)) ++mismatches;
        }
  CHECK(mismatches == 0);
  // Output frame 0 is the second sub-frame of latent frame 0.
  CHECK(oa[0][1][0][3][5] == code(1, 1, 1, 1, 0, 1, 2));

  // Spatial only: nothing dropped; temporal only: 2F - 1 frames.
  CHECK(video_depth_to_space(at::zeros({1, 8, 3, 2, 2}), 1, 2, 2).sizes() == at::IntArrayRef({1, 2, 3, 4, 4}));
  CHECK(video_depth_to_space(at::zeros({1, 8, 3, 2, 2}), 2, 1, 1).sizes() == at::IntArrayRef({1, 4, 5, 2, 2}));
}

TEST_CASE("ltx2 video vae: 4x4 unpatchify puts the width sub-position first", "[ltx2][video_vae]") {
  const int64_t p = 4, C = 3, F = 2, H = 2, W = 3;
  at::Tensor x = at::empty({1, C * p * p, F, H, W});
  auto xa = x.accessor<float, 5>();
  for (int64_t ch = 0; ch < C * p * p; ++ch)
    for (int64_t f = 0; f < F; ++f)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t xx = 0; xx < W; ++xx) xa[0][ch][f][y][xx] = static_cast<float>(ch * 1000 + f * 100 + y * 10 + xx);

  at::Tensor out = video_unpatchify(x, p);
  REQUIRE(out.sizes() == at::IntArrayRef({1, C, F, H * p, W * p}));
  auto oa = out.accessor<float, 5>();
  int64_t mismatches = 0;
  for (int64_t c = 0; c < C; ++c)
    for (int64_t f = 0; f < F; ++f)
      for (int64_t yo = 0; yo < H * p; ++yo)
        for (int64_t xo = 0; xo < W * p; ++xo) {
          const int64_t a = xo % p, b = yo % p;  // a: width sub-position, b: height sub-position
          const int64_t ch = c * p * p + a * p + b;
          if (oa[0][c][f][yo][xo] != static_cast<float>(ch * 1000 + f * 100 + (yo / p) * 10 + xo / p)) ++mismatches;
        }
  CHECK(mismatches == 0);
  // Channel 1 (a = 0, b = 1) lands one row down, not one column right.
  CHECK(oa[0][0][0][1][0] == 1000.0f);
  CHECK(oa[0][0][0][0][1] == 4000.0f);
}

namespace {
// Random weights, except latents_mean / latents_std which are given.
class BuffersSource : public nn::WrappedSource {
 public:
  BuffersSource(at::Tensor mean, at::Tensor std)
      : WrappedSource(std::make_shared<nn::RandomSource>(3)), mean_(std::move(mean)), std_(std::move(std)) {}
  at::Tensor load(const std::string& key, const std::vector<int64_t>& full_shape, const io::Slice& slice,
                  at::ScalarType dtype, const at::Device& device, nn::Init init) override {
    if (key == "latents_mean") return mean_.to(device, dtype);
    if (key == "latents_std") return std_.to(device, dtype);
    return WrappedSource::load(key, full_shape, slice, dtype, device, init);
  }

 private:
  at::Tensor mean_, std_;
};

const char* kTinyConfig = R"({"latent_channels": 3, "decoder_block_out_channels": [8], "decoder_layers_per_block":
  [0, 0], "decoder_spatio_temporal_scaling": [true], "decoder_inject_noise": [false, false], "upsample_type":
  ["spatiotemporal"], "upsample_residual": [true], "upsample_factor": [2], "patch_size": 1})";
}  // namespace

TEST_CASE("ltx2 video vae: denormalize is z * std / scaling_factor + mean per channel", "[ltx2][video_vae]") {
  const at::Tensor mean = at::tensor({0.5f, -1.0f, 2.0f}), stdev = at::tensor({2.0f, 0.25f, 3.0f});
  const VideoVae vae(parse(kTinyConfig), nn::Weights(std::make_shared<BuffersSource>(mean, stdev), at::kFloat, at::kCPU));
  at::Tensor z = at::randn({2, 3, 2, 2, 4});
  at::Tensor d = vae.denormalize(z);
  REQUIRE(d.sizes() == z.sizes());
  for (int64_t c = 0; c < 3; ++c)
    CHECK(at::allclose(d.select(1, c), z.select(1, c) * stdev[c].item<float>() + mean[c].item<float>(), 1e-6, 1e-6));
  CHECK(vae.denormalize(at::zeros({1, 3, 1, 1, 1})).flatten().equal(mean));
  CHECK(vae.denormalize(z.to(at::kBFloat16)).scalar_type() == at::kBFloat16);
  CHECK(vae.denormalize(z.to(at::kDouble)).scalar_type() == at::kDouble);
  CHECK_THROWS_AS(vae.denormalize(at::zeros({1, 4, 1, 1, 1})), Error);

  auto scaled = nlohmann::json::parse(kTinyConfig);
  scaled["scaling_factor"] = 2.0;
  const VideoVae vae2(VideoVaeConfig::from_json(scaled, "scaled"),
                      nn::Weights(std::make_shared<BuffersSource>(mean, stdev), at::kFloat, at::kCPU));
  CHECK(at::allclose(vae2.denormalize(z).select(1, 0), z.select(1, 0) * 2.0 / 2.0 + 0.5, 1e-6, 1e-6));
}

TEST_CASE("ltx2 video vae: random weights at the real layout decode to [B, 3, 8F-7, 32H, 32W]",
          "[ltx2][video_vae]") {
  // The real block structure (3 spatio-temporal residual upsamplers, 5 resnets per block, reflect,
  // non-causal, 4x4 patches) at 1/16 of the width.
  const VideoVaeConfig config = parse(R"({"latent_channels": 8, "decoder_block_out_channels": [16, 32, 64]})");
  REQUIRE(config.spatial_ratio() == 32);
  REQUIRE(config.temporal_ratio() == 8);
  const VideoVae vae = random_vae(config);

  const at::Tensor z = at::randn({2, 8, 2, 2, 3});
  at::Tensor x = vae.decode(z);
  REQUIRE(x.sizes() == at::IntArrayRef({2, 3, 9, 64, 96}));
  CHECK(x.scalar_type() == at::kFloat);
  CHECK(all_finite(x));
  CHECK(x.std().item<float>() > 1e-3);  // not collapsed to a constant
  // One sample at a time gives the same result as the batch.
  CHECK(at::allclose(vae.decode(z.narrow(0, 1, 1)), x.narrow(0, 1, 1), 1e-5, 1e-5));

  at::Tensor frames = vae.decode_to_frames(z.narrow(0, 0, 1));
  REQUIRE(frames.sizes() == at::IntArrayRef({1, 9, 3, 64, 96}));  // frames-major
  CHECK(frames.scalar_type() == at::kFloat);
  CHECK(frames.is_contiguous());
  CHECK(frames.min().item<float>() >= 0);
  CHECK(frames.max().item<float>() <= 1);
  const at::Tensor expect = (vae.decode(vae.denormalize(z.narrow(0, 0, 1))) * 0.5 + 0.5).clamp(0, 1);
  CHECK(at::allclose(frames, expect.permute({0, 2, 1, 3, 4}), 1e-6, 1e-6));

  // bf16 weights run in bf16.
  CHECK(random_vae(config, at::kBFloat16).decode(at::randn({1, 8, 1, 2, 2})).scalar_type() == at::kBFloat16);

  CHECK_THROWS_AS(vae.decode(at::randn({1, 7, 2, 2, 2})), Error);
  CHECK_THROWS_AS(vae.decode(at::randn({1, 8, 2, 2})), Error);
  CHECK_THROWS_WITH(vae.decode(at::randn({1, 8, 1, 1, 2})), Catch::Contains("reflect"));
}

TEST_CASE("ltx2 video vae: causal, zero padding, temporal/spatial upsamplers and a width change",
          "[ltx2][video_vae]") {
  // Decoder order: block 0 = temporal x2 with residual (factor 2), block 1 = spatial x2 without residual
  // (factor 1) after a channel-changing conv_in resnet 8 -> 4.
  const VideoVaeConfig config = parse(R"({"latent_channels": 4, "decoder_block_out_channels": [4, 16],
    "decoder_layers_per_block": [1, 1, 1], "decoder_spatio_temporal_scaling": [true, true],
    "decoder_inject_noise": false, "upsample_type": ["temporal", "spatial"], "upsample_residual": [false, true],
    "upsample_factor": [1, 2], "patch_size": 2, "decoder_causal": true, "decoder_spatial_padding_mode": "zeros"})");
  CHECK(config.spatial_ratio() == 4);
  CHECK(config.temporal_ratio() == 2);
  const VideoVae vae = random_vae(config);
  at::Tensor z = at::randn({1, 4, 3, 1, 2});  // zero padding allows a single row
  at::Tensor x = vae.decode(z);
  REQUIRE(x.sizes() == at::IntArrayRef({1, 3, 5, 4, 8}));
  CHECK(all_finite(x));
  // Causal: the first output frames do not depend on the last latent frame.
  at::Tensor z2 = z.clone();
  z2.narrow(2, 2, 1).add_(1.0);
  at::Tensor x2 = vae.decode(z2);
  CHECK(at::allclose(x.narrow(2, 0, 1), x2.narrow(2, 0, 1), 1e-6, 1e-6));
  CHECK_FALSE(at::allclose(x.narrow(2, 4, 1), x2.narrow(2, 4, 1), 1e-6, 1e-6));
}

namespace {
// Counts the elements a module asks for, per top-level key prefix, without allocating them.
class CountingSource : public nn::WeightSource {
 public:
  std::map<std::string, int64_t> counts;
  bool has(const std::string&) const override { return true; }
  at::Tensor load(const std::string& key, const std::vector<int64_t>& full_shape, const io::Slice&,
                  at::ScalarType dtype, const at::Device& device, nn::Init) override {
    at::Tensor t = at::zeros({1}, at::TensorOptions().dtype(dtype).device(device)).expand(full_shape);
    counts[key.substr(0, key.find('.'))] += t.numel();
    return t;
  }
  void check_all_used() const override {}
  uint64_t bytes_read() const override { return 0; }
  std::string describe() const override { return "counting"; }
};
}  // namespace

TEST_CASE("ltx2 video vae: the real config declares the diffusers decoder parameters", "[ltx2][video_vae]") {
  auto source = std::make_shared<CountingSource>();
  const VideoVae vae(VideoVaeConfig{}, nn::Weights(source, at::kFloat, at::kCPU));
  CHECK(source->counts["decoder"] == 528380720);  // ltx2.md 0
  CHECK(source->counts["latents_mean"] == 128);
  CHECK(source->counts["latents_std"] == 128);
  CHECK(source->counts.count("encoder") == 0);
}

TEST_CASE("ltx2 video vae: decode matches the ltx2_video_vae fixture", "[ltx2][video_vae][golden]") {
  const verify::Case c(fixture_dir("models/ltx2_video_vae_b1_f3_4x6"));
  const VideoVaeConfig config = VideoVaeConfig::from_json(c.config(), c.file("config.json"));
  CHECK(config.spatial_ratio() == 8);
  CHECK(config.temporal_ratio() == 4);
  {
    // Without the ignore list, the encoder's tensors are reported.
    auto strict = fixture_source(c, {});
    const VideoVae vae(config, nn::Weights(strict, at::kFloat, at::kCPU));
    CHECK_THROWS_WITH(strict->check_all_used(), Catch::Contains("encoder."));
  }
  auto source = fixture_source(c);
  const VideoVae vae(config, nn::Weights(source, at::kFloat, at::kCPU));
  REQUIRE_NOTHROW(source->check_all_used());

  const at::Tensor ref = c.tensor("out.decoded");  // [1, 3, 9, 32, 48], raw (not clamped)
  at::Tensor out = vae.decode(c.tensor("in.latents"));
  REQUIRE(out.sizes() == ref.sizes());
  const double err = verify::rel_error(out, ref);
  WARN("ltx2 video vae fp32 decode rel error " << err);
  CHECK(err < 1e-4);

  // The pipeline path from normalised latents: denormalize -> decode -> [0, 1] frames-major.
  const auto store = io::TensorStore::open_files({c.file("weights.safetensors")});
  auto buffers = std::make_shared<nn::CheckpointSource>(store, "", VideoVae::unread_keys());
  const nn::Weights bw(buffers, at::kFloat, at::kCPU);
  const at::Tensor mean = bw.get("latents_mean", {8}).view({1, -1, 1, 1, 1});
  const at::Tensor stdev = bw.get("latents_std", {8}).view({1, -1, 1, 1, 1});
  at::Tensor frames = vae.decode_to_frames((c.tensor("in.latents") - mean) / stdev);  // [1, 9, 3, 32, 48]
  const at::Tensor ref_frames = (ref * 0.5 + 0.5).clamp(0, 1).permute({0, 2, 1, 3, 4});
  REQUIRE(frames.sizes() == ref_frames.sizes());
  CHECK(verify::rel_error(frames, ref_frames) < 1e-4);
}

TEST_CASE("ltx2 video vae: bfloat16 decode of the fixture stays close to fp32", "[ltx2][video_vae][golden]") {
  const verify::Case c(fixture_dir("models/ltx2_video_vae_b1_f3_4x6"));
  const VideoVaeConfig config = VideoVaeConfig::from_json(c.config(), c.file("config.json"));
  const VideoVae fp32(config, nn::Weights(fixture_source(c), at::kFloat, at::kCPU));
  const VideoVae bf16(config, nn::Weights(fixture_source(c), at::kBFloat16, at::kCPU));
  const at::Tensor latents = c.tensor("in.latents");
  at::Tensor out = bf16.decode(latents);
  CHECK(out.scalar_type() == at::kBFloat16);
  const double err = verify::rel_error(out, fp32.decode(latents));
  WARN("ltx2 video vae bf16 vs fp32 decode rel error " << err);
  CHECK(err < 2e-2);
  CHECK(verify::rel_error(out, c.tensor("out.decoded")) < 2e-2);
}

TEST_CASE("ltx2 video vae: encoder patchify and space-to-depth invert the decoder's orders",
          "[ltx2][video_vae]") {
  const at::Tensor x = at::randn({2, 3, 2, 8, 12});
  const at::Tensor p = video_patchify(x, 4);  // [2, 48, 2, 2, 3]
  REQUIRE(p.sizes() == at::IntArrayRef({2, 48, 2, 2, 3}));
  CHECK(at::equal(video_unpatchify(p, 4), x));
  // Channel c*16 + a*4 + b holds row 4y + b, column 4x + a (a = width sub-position).
  CHECK(p[1][2 * 16 + 3 * 4 + 1][0][1][2].item<float>() == x[1][2][0][4 * 1 + 1][4 * 2 + 3].item<float>());
  // Without a temporal stride the encoder's space-to-depth is the inverse of the decoder's depth-to-space.
  const at::Tensor s = video_space_to_depth(x, 1, 2, 2);  // [2, 12, 2, 4, 6]
  REQUIRE(s.sizes() == at::IntArrayRef({2, 12, 2, 4, 6}));
  CHECK(at::equal(video_depth_to_space(s, 1, 2, 2), x));
  // With a temporal stride: channel ((c*st + t)*sh + h)*sw + w holds frame 2f + t, row 2y + h, column 2x + w.
  const at::Tensor t = video_space_to_depth(x, 2, 2, 2);  // [2, 24, 1, 4, 6]
  CHECK(t[0][(1 * 2 + 1) * 4 + 0 * 2 + 1][0][3][5].item<float>() == x[0][1][1][6][11].item<float>());
  CHECK_THROWS_AS(video_space_to_depth(x, 2, 3, 2), Error);
  CHECK_THROWS_AS(video_patchify(x, 5), Error);
}

TEST_CASE("ltx2 video vae: encoder config checks and frame counts", "[ltx2][video_vae]") {
  const VideoVaeConfig real{};
  REQUIRE_NOTHROW(real.check_encoder("vae/config.json"));
  CHECK(real.encoder_spatial_ratio() == 32);
  // temporal, spatiotemporal, spatiotemporal: each maps F to (F + 1) / 2.
  CHECK(real.encoded_frames(1) == 1);
  CHECK(real.encoded_frames(9) == 2);
  CHECK(real.encoded_frames(121) == 16);
  CHECK(real.encoded_frames(8) == 0);
  using Catch::Contains;
  // A decode-only parse accepts encoder settings it never builds; check_encoder() names the key.
  const VideoVaeConfig conv =
      parse(R"({"downsample_type": ["conv", "temporal", "spatiotemporal", "spatiotemporal"]})");
  CHECK_THROWS_WITH(conv.check_encoder("vae/config.json"),
                    Contains("vae/config.json") && Contains("downsample_type"));
  CHECK_THROWS_WITH(parse(R"({"layers_per_block": [1, 1]})").check_encoder("c"),
                    Contains("layers_per_block"));
  CHECK_THROWS_WITH(parse(R"({"encoder_spatial_padding_mode": "circular"})").check_encoder("c"),
                    Contains("encoder_spatial_padding_mode"));
  CHECK_THROWS_WITH(parse(R"({"spatio_temporal_scaling": [false, true, true, true]})").check_encoder("c"),
                    Contains("spatio_temporal_scaling"));
  CHECK_THROWS_WITH(parse(R"({"down_block_types": ["LTXVideoDownBlock3D"]})"), Contains("down_block_types"));
  // The constructor checks it when it builds the encoder.
  CHECK_THROWS_WITH(
      VideoVae(conv, nn::Weights(std::make_shared<nn::RandomSource>(1), at::kFloat, at::kCPU), true),
      Contains("downsample_type"));
}

TEST_CASE("ltx2 video vae: the real config declares the diffusers encoder parameters", "[ltx2][video_vae]") {
  auto source = std::make_shared<CountingSource>();
  const VideoVae vae(VideoVaeConfig{}, nn::Weights(source, at::kFloat, at::kCPU), /*with_encoder=*/true);
  CHECK(source->counts["encoder"] == 694098881);  // ltx2.md 0
  CHECK(source->counts["decoder"] == 528380720);
  CHECK(vae.has_encoder());
}

TEST_CASE("ltx2 video vae: encode matches the ltx2_video_vae_encode fixture", "[ltx2][video_vae][golden]") {
  const verify::Case c(fixture_dir("models/ltx2_video_vae_encode_b1_f9_32x48"));
  const VideoVaeConfig config = VideoVaeConfig::from_json(c.config(), c.file("config.json"));
  CHECK(config.encoder_spatial_ratio() == 8);
  CHECK(config.encoded_frames(9) == 5);  // one spatiotemporal downsampler
  {
    auto strict = fixture_source(c, VideoVae::unread_keys(/*with_encoder=*/true));
    const VideoVae vae(config, nn::Weights(strict, at::kFloat, at::kCPU));
    CHECK_THROWS_WITH(strict->check_all_used(), Catch::Contains("encoder."));
    CHECK_THROWS_WITH(vae.encode_mean(c.tensor("in.video")), Catch::Contains("without its encoder"));
  }
  auto source = fixture_source(c, VideoVae::unread_keys(/*with_encoder=*/true));
  const VideoVae vae(config, nn::Weights(source, at::kFloat, at::kCPU), /*with_encoder=*/true);
  REQUIRE_NOTHROW(source->check_all_used());

  const at::Tensor ref = c.tensor("out.encoded_mean");  // [1, 8, 5, 4, 6]
  at::Tensor out = vae.encode_mean(c.tensor("in.video"));
  REQUIRE(out.sizes() == ref.sizes());
  const double err = verify::rel_error(out, ref);
  WARN("ltx2 video vae fp32 encode rel error " << err);
  CHECK(err < 1e-4);

  const VideoVae bf16(config, nn::Weights(fixture_source(c, {}), at::kBFloat16, at::kCPU), true);
  at::Tensor ob = bf16.encode_mean(c.tensor("in.video"));
  CHECK(ob.scalar_type() == at::kBFloat16);
  const double bf16_err = verify::rel_error(ob, ref);
  WARN("ltx2 video vae bf16 encode rel error " << bf16_err);
  CHECK(bf16_err < 3e-2);

  CHECK_THROWS_WITH(vae.encode_mean(at::zeros({1, 3, 8, 32, 48})), Catch::Contains("frames"));
  CHECK_THROWS_WITH(vae.encode_mean(at::zeros({1, 3, 9, 36, 48})), Catch::Contains("multiples of 8"));
}

TEST_CASE("ltx2 video vae: image-to-video initial latents match the i2v pipeline fixture",
          "[ltx2][i2v][golden]") {
  const verify::Case c(fixture_dir("pipelines/ltx2_i2v_pipeline_64x96x9_s3_cfg4.0"));
  const VideoVaeConfig config =
      VideoVaeConfig::from_json(c.config().at("vae"), c.file("config.json") + " [vae]");
  auto source = fixture_source(c, VideoVae::unread_keys(/*with_encoder=*/true), "vae.safetensors");
  const VideoVae vae(config, nn::Weights(source, at::kFloat, at::kCPU), /*with_encoder=*/true);
  REQUIRE_NOTHROW(source->check_all_used());

  const at::Tensor noise = c.tensor("in.noise");  // [1, 8, 3, 8, 12]
  const at::Tensor encoded = encode_first_frame(vae, pixels(c.tensor("in.image_0")));  // [1, 8, 1, 8, 12]
  const ImageToVideoLatents out = image_to_video_latents(vae, encoded, noise);
  const at::Tensor ref = c.tensor("out.initial_latents"), ref_mask = c.tensor("out.conditioning_mask");
  REQUIRE(out.latents.sizes() == ref.sizes());                 // [1, 288, 8]
  REQUIRE(out.conditioning_mask.sizes() == ref_mask.sizes());  // [1, 288]
  const double err = verify::rel_error(out.latents, ref);
  WARN("ltx2 i2v initial latents rel error " << err);
  CHECK(err < 1e-4);
  CHECK(at::equal(out.conditioning_mask, ref_mask));
  // Frames 1.. are the noise itself, bit for bit; frame 0 (96 tokens) is the image.
  CHECK(at::equal(out.latents.narrow(1, 96, 192), noise.flatten(2).transpose(1, 2).narrow(1, 96, 192)));

  // One image for a batch of 2 noises: both rows hold the same frame 0.
  const ImageToVideoLatents two =
      image_to_video_latents(vae, encoded, at::cat({noise, at::randn_like(noise)}, 0));
  REQUIRE(two.latents.sizes() == at::IntArrayRef({2, 288, 8}));
  CHECK(at::equal(two.latents[0].narrow(0, 0, 96), two.latents[1].narrow(0, 0, 96)));
  CHECK(at::equal(two.conditioning_mask[1], ref_mask[0]));
  CHECK_THROWS_AS(image_to_video_latents(vae, encoded.repeat({3, 1, 1, 1, 1}), at::cat({noise, noise}, 0)),
                  Error);
  CHECK_THROWS_AS(image_to_video_latents(vae, encoded, noise.narrow(3, 0, 4)), Error);
  CHECK_THROWS_AS(encode_first_frame(vae, at::zeros({3, 64, 96})), Error);
}
