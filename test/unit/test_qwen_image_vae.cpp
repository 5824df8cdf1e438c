// Qwen-Image VAE: config parsing, a random-weights decoder at the real channel layout, the
// de-normalisation, the decoder against the qwenimage_vae fixture (fp32 and bf16), the encoder against
// qwenimage_vae_encode, and the image-to-image initial latents and strength rule against the img2img
// pipeline fixture.
#include <catch2/catch.hpp>
#include <map>

#include "lib/io/checkpoint.h"
#include "lib/io/json.h"
#include "lib/nn/weights.h"
#include "lib/runtime/error.h"
#include "lib/verify/case.h"
#include "lib/verify/compare.h"
#include "models/qwen_image/image_latents.h"
#include "models/qwen_image/vae.h"
#include "test/unit/fixtures.h"

using namespace ditgen;
using namespace ditgen::qwen_image;

namespace {

// The real layout (dim_mult [1,2,4,4], 3 resnets per up block, z_dim 16) at base_dim 8: dims
// [32, 32, 32, 16, 8], spatial factor 8.
VaeConfig small_real_layout() {
  return VaeConfig::from_json(nlohmann::json::parse(R"({"base_dim": 8})"), "small");
}

Vae random_vae(const VaeConfig& config, at::ScalarType dtype = at::kFloat, bool with_encoder = false) {
  return Vae(config, nn::Weights(std::make_shared<nn::RandomSource>(7), dtype, at::kCPU), with_encoder);
}

std::shared_ptr<nn::CheckpointSource> fixture_source(const verify::Case& c,
                                                     std::vector<std::string> ignore = Vae::unread_keys(),
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

TEST_CASE("qwen_image vae: config defaults are the real Qwen-Image values", "[qwen_image][vae]") {
  const VaeConfig c = VaeConfig::from_json(nlohmann::json::object(), "vae/config.json");
  CHECK(c.base_dim == 96);
  CHECK(c.z_dim == 16);
  CHECK(c.dim_mult == std::vector<int64_t>({1, 2, 4, 4}));
  CHECK(c.num_res_blocks == 2);
  CHECK(c.attn_scales.empty());
  CHECK(c.temperal_downsample == std::vector<bool>({false, true, true}));
  CHECK(c.input_channels == 3);
  REQUIRE(c.latents_mean.size() == 16);
  REQUIRE(c.latents_std.size() == 16);
  CHECK(c.latents_mean.front() == Approx(-0.7571));
  CHECK(c.latents_mean.back() == Approx(-0.2921));
  CHECK(c.latents_std.front() == Approx(2.8184));
  CHECK(c.latents_std.back() == Approx(1.9160));
  CHECK(c.scale_factor() == 8);

  // The pipeline-test config (qwen-image.md 6): spatial factor 4.
  const VaeConfig tiny = VaeConfig::from_json(nlohmann::json::parse(R"({
    "base_dim": 24, "z_dim": 4, "dim_mult": [1, 2, 4], "num_res_blocks": 1, "temperal_downsample": [false, true],
    "attn_scales": [], "dropout": 0.0, "latents_mean": [0, 0, 0, 0], "latents_std": [1, 1, 1, 1]})"),
                                              "tiny");
  CHECK(tiny.scale_factor() == 4);
  CHECK(tiny.latents_std == std::vector<double>({1, 1, 1, 1}));
}

TEST_CASE("qwen_image vae: config errors name the file and the key", "[qwen_image][vae]") {
  auto parse = [](const char* text) {
    return VaeConfig::from_json(nlohmann::json::parse(text), "vae/config.json");
  };
  using Catch::Contains;
  CHECK_THROWS_WITH(parse(R"({"attn_scales": [0.5]})"),
                    Contains("vae/config.json") && Contains("attn_scales"));
  CHECK_THROWS_WITH(parse(R"({"temperal_downsample": [false, true]})"),
                    Contains("temperal_downsample") && Contains("dim_mult"));
  CHECK_THROWS_WITH(parse(R"({"latents_mean": [0, 0]})"), Contains("latents_mean") && Contains("z_dim"));
  CHECK_THROWS_WITH(parse(R"({"z_dim": 2, "latents_mean": [0, 0], "latents_std": [1, 0]})"),
                    Contains("latents_std") && Contains("positive"));
  CHECK_THROWS_WITH(parse(R"({"z_dim": 4})"), Contains("latents_mean"));  // the defaults have 16 entries
  CHECK_THROWS_WITH(parse(R"({"base_dim": 0})"), Contains("base_dim"));
  CHECK_THROWS_WITH(parse(R"({"dim_mult": [1, 0, 4, 4]})"), Contains("dim_mult"));
  CHECK_THROWS_WITH(parse(R"({"num_res_blocks": -1})"), Contains("num_res_blocks"));
  CHECK_THROWS_WITH(parse(R"({"base_dim": "wide"})"), Contains("base_dim"));
  CHECK_THROWS_WITH(parse("[]"), Contains("vae/config.json"));
}

TEST_CASE("qwen_image vae: random weights at the real layout decode to the right shape",
          "[qwen_image][vae]") {
  const VaeConfig config = small_real_layout();
  const Vae vae = random_vae(config);
  REQUIRE(vae.scale_factor() == 8);

  at::Tensor x = vae.decode(at::randn({2, 16, 1, 3, 5}));
  REQUIRE(x.sizes() == at::IntArrayRef({2, 3, 1, 24, 40}));
  CHECK(x.scalar_type() == at::kFloat);
  CHECK(all_finite(x));
  CHECK(x.abs().max().item<float>() <= 1);
  CHECK(x.std().item<float>() > 1e-3);  // not collapsed to a constant

  at::Tensor img = vae.decode_to_image(at::randn({1, 16, 1, 2, 3}));
  REQUIRE(img.sizes() == at::IntArrayRef({1, 3, 16, 24}));
  CHECK(img.scalar_type() == at::kFloat);
  CHECK(img.min().item<float>() >= 0);
  CHECK(img.max().item<float>() <= 1);

  // bf16 weights run in bf16.
  CHECK(random_vae(config, at::kBFloat16).decode(at::randn({1, 16, 1, 2, 2})).scalar_type() == at::kBFloat16);
}

TEST_CASE("qwen_image vae: only one frame with z_dim channels is accepted", "[qwen_image][vae]") {
  const VaeConfig config = VaeConfig::from_json(nlohmann::json::parse(R"({
    "base_dim": 4, "z_dim": 4, "dim_mult": [1, 2], "num_res_blocks": 0, "temperal_downsample": [true],
    "latents_mean": [0, 0, 0, 0], "latents_std": [1, 1, 1, 1]})"),
                                                "tiny");
  const Vae vae = random_vae(config);
  CHECK(vae.decode(at::randn({1, 4, 1, 2, 3})).sizes() == at::IntArrayRef({1, 3, 1, 4, 6}));
  CHECK_THROWS_WITH(vae.decode(at::randn({1, 4, 2, 2, 3})), Catch::Contains("frame"));
  CHECK_THROWS_AS(vae.decode(at::randn({1, 5, 1, 2, 3})), Error);
  CHECK_THROWS_AS(vae.decode(at::randn({1, 4, 2, 3})), Error);
  CHECK_THROWS_AS(vae.decode_to_image(at::randn({1, 4, 2, 2, 3})), Error);
}

TEST_CASE("qwen_image vae: denormalize is z * std + mean per channel", "[qwen_image][vae]") {
  const VaeConfig config = VaeConfig::from_json(nlohmann::json::parse(R"({
    "base_dim": 4, "z_dim": 3, "dim_mult": [1], "temperal_downsample": [],
    "latents_mean": [0.5, -1.0, 2.0], "latents_std": [2.0, 0.25, 3.0]})"),
                                                "tiny");
  const Vae vae = random_vae(config);
  at::Tensor z = at::randn({2, 3, 1, 2, 4});
  at::Tensor d = vae.denormalize(z);
  REQUIRE(d.sizes() == z.sizes());
  const double means[] = {0.5, -1.0, 2.0}, stds[] = {2.0, 0.25, 3.0};
  for (int64_t c = 0; c < 3; ++c)
    CHECK(at::allclose(d.select(1, c), z.select(1, c) * stds[c] + means[c], 1e-6, 1e-6));
  CHECK(vae.denormalize(at::zeros({1, 3, 1, 1, 1})).flatten().equal(at::tensor({0.5f, -1.0f, 2.0f})));
  CHECK(vae.denormalize(z.to(at::kBFloat16)).scalar_type() == at::kBFloat16);
  CHECK_THROWS_AS(vae.denormalize(at::zeros({1, 4, 1, 1, 1})), Error);
}

TEST_CASE("qwen_image vae: decode matches the qwenimage_vae fixture", "[qwen_image][vae][golden]") {
  const verify::Case c(fixture_dir("models/qwenimage_vae_b1_6x8"));
  const VaeConfig config = VaeConfig::from_json(c.config(), c.file("config.json"));
  {
    // Without the ignore list, the encoder's tensors and the unused time_conv are reported.
    auto strict = fixture_source(c, {});
    const Vae vae(config, nn::Weights(strict, at::kFloat, at::kCPU));
    CHECK_THROWS_WITH(strict->check_all_used(), Catch::Contains("encoder.") && Catch::Contains("time_conv"));
  }
  auto source = fixture_source(c);
  const Vae vae(config, nn::Weights(source, at::kFloat, at::kCPU));
  REQUIRE_NOTHROW(source->check_all_used());

  const at::Tensor ref = c.tensor("out.decoded");  // [1, 3, 1, 24, 32]
  at::Tensor out = vae.decode(c.tensor("in.latents"));
  REQUIRE(out.sizes() == ref.sizes());
  const double err = verify::rel_error(out, ref);
  WARN("qwen_image vae fp32 decode rel error " << err);
  CHECK(err < 1e-4);

  // The pipeline path from normalised latents: denormalize -> decode -> frame 0 -> [0, 1].
  const at::Tensor mean = at::tensor(config.latents_mean).to(at::kFloat).view({1, -1, 1, 1, 1});
  const at::Tensor stdev = at::tensor(config.latents_std).to(at::kFloat).view({1, -1, 1, 1, 1});
  at::Tensor image = vae.decode_to_image((c.tensor("in.latents") - mean) / stdev);  // [1, 3, 24, 32]
  const at::Tensor ref_image = (ref.select(2, 0) * 0.5 + 0.5).clamp(0, 1);
  REQUIRE(image.sizes() == ref_image.sizes());
  CHECK(verify::rel_error(image, ref_image) < 1e-4);
}

TEST_CASE("qwen_image vae: bfloat16 decode of the fixture stays close to fp32", "[qwen_image][vae][golden]") {
  const verify::Case c(fixture_dir("models/qwenimage_vae_b1_6x8"));
  const VaeConfig config = VaeConfig::from_json(c.config(), c.file("config.json"));
  const Vae fp32(config, nn::Weights(fixture_source(c), at::kFloat, at::kCPU));
  const Vae bf16(config, nn::Weights(fixture_source(c), at::kBFloat16, at::kCPU));
  const at::Tensor latents = c.tensor("in.latents");
  at::Tensor out = bf16.decode(latents);
  CHECK(out.scalar_type() == at::kBFloat16);
  const double err = verify::rel_error(out, fp32.decode(latents));
  WARN("qwen_image vae bf16 vs fp32 decode rel error " << err);
  CHECK(err < 2e-2);
}

namespace {
// Declares nothing of its own: counts the elements a module asks for, per top-level key prefix.
class CountingSource : public nn::WeightSource {
 public:
  std::map<std::string, int64_t> counts;
  bool has(const std::string&) const override { return true; }
  at::Tensor load(const std::string& key, const std::vector<int64_t>& full_shape, const io::Slice&,
                  at::ScalarType dtype, const at::Device& device, nn::Init) override {
    at::Tensor t = at::empty(full_shape, at::TensorOptions().dtype(dtype).device(device));
    counts[key.substr(0, key.find('.'))] += t.numel();
    return t;
  }
  void check_all_used() const override {}
  uint64_t bytes_read() const override { return 0; }
  std::string describe() const override { return "counting"; }
};
}  // namespace

TEST_CASE("qwen_image vae: the real config declares the diffusers decoder parameters", "[qwen_image][vae]") {
  auto source = std::make_shared<CountingSource>();
  const Vae vae(VaeConfig{}, nn::Weights(source, at::kFloat, at::kCPU));
  // qwen-image.md 3.1: decoder + post_quant_conv 73,295,603, less the two upsample3d time_convs
  // ([768, 384, 3, 1, 1] + [768] each) that a one-frame decode never reads.
  const int64_t time_convs = 2 * (768 * 384 * 3 + 768);
  CHECK(source->counts["decoder"] + source->counts["post_quant_conv"] == 73295603 - time_convs);
  CHECK(source->counts["post_quant_conv"] == 16 * 16 + 16);
  CHECK(source->counts.count("encoder") == 0);
}

TEST_CASE("qwen_image vae: encode matches the qwenimage_vae_encode fixture", "[qwen_image][vae][golden]") {
  const verify::Case c(fixture_dir("models/qwenimage_vae_encode_b1_32x48"));
  const VaeConfig config = VaeConfig::from_json(c.config(), c.file("config.json"));
  {
    // A decode-only load of the same file leaves the encoder unread (and says so without the ignore list).
    auto strict = fixture_source(c, Vae::unread_keys(/*with_encoder=*/true));
    const Vae vae(config, nn::Weights(strict, at::kFloat, at::kCPU));
    CHECK_FALSE(vae.has_encoder());
    CHECK_THROWS_WITH(strict->check_all_used(), Catch::Contains("encoder."));
    CHECK_THROWS_WITH(vae.encode(c.tensor("in.image")), Catch::Contains("without its encoder"));
  }
  auto source = fixture_source(c, Vae::unread_keys(/*with_encoder=*/true));
  const Vae vae(config, nn::Weights(source, at::kFloat, at::kCPU), /*with_encoder=*/true);
  REQUIRE_NOTHROW(source->check_all_used());

  const Vae::Posterior post = vae.encode(c.tensor("in.image"));  // [1, 4, 1, 8, 12] each
  const at::Tensor ref_mean = c.tensor("out.encoded_mean"), ref_std = c.tensor("out.encoded_std");
  REQUIRE(post.mean.sizes() == ref_mean.sizes());
  REQUIRE(post.std.sizes() == ref_std.sizes());
  const double mean_err = verify::rel_error(post.mean, ref_mean),
               std_err = verify::rel_error(post.std, ref_std);
  WARN("qwen_image vae fp32 encode rel error: mean " << mean_err << ", std " << std_err);
  CHECK(mean_err < 1e-4);
  CHECK(std_err < 1e-4);

  // bf16 weights run in bf16 and stay close.
  const Vae bf16(config, nn::Weights(fixture_source(c, Vae::unread_keys(true)), at::kBFloat16, at::kCPU),
                 true);
  const Vae::Posterior pb = bf16.encode(c.tensor("in.image"));
  CHECK(pb.mean.scalar_type() == at::kBFloat16);
  const double bf16_err = verify::rel_error(pb.mean, ref_mean);
  WARN("qwen_image vae bf16 encode mean rel error " << bf16_err);
  CHECK(bf16_err < 3e-2);

  // One frame of 3 channels whose size reaches the VAE factor, only.
  CHECK_THROWS_WITH(vae.encode(at::zeros({1, 3, 2, 8, 8})), Catch::Contains("frame"));
  CHECK_THROWS_AS(vae.encode(at::zeros({1, 3, 8, 8})), Error);
  CHECK_THROWS_AS(vae.encode(at::zeros({1, 3, 1, 2, 8})), Error);
}

TEST_CASE("qwen_image vae: encode of sizes that are not multiples of the factor floors like upstream",
          "[qwen_image][vae]") {
  const VaeConfig config = VaeConfig::from_json(nlohmann::json::parse(R"({
    "base_dim": 4, "z_dim": 2, "dim_mult": [1, 2, 2], "num_res_blocks": 1, "temperal_downsample": [false, true],
    "latents_mean": [0, 0], "latents_std": [1, 1]})"),
                                                "tiny");
  const Vae vae = random_vae(config, at::kFloat, /*with_encoder=*/true);
  // Each ZeroPad2d(0, 1, 0, 1) + stride-2 conv maps n to floor(n / 2): 13 -> 6 -> 3, 10 -> 5 -> 2.
  const Vae::Posterior post = vae.encode(at::rand({2, 3, 1, 13, 10}) * 2 - 1);
  CHECK(post.mean.sizes() == at::IntArrayRef({2, 2, 1, 3, 2}));
  CHECK(all_finite(post.mean));
  CHECK(post.std.min().item<float>() > 0);
}

TEST_CASE("qwen_image vae: the real config declares the diffusers encoder parameters", "[qwen_image][vae]") {
  auto source = std::make_shared<CountingSource>();
  const Vae vae(VaeConfig{}, nn::Weights(source, at::kFloat, at::kCPU), /*with_encoder=*/true);
  // qwen-image.md 3.1: encoder + quant_conv 53,596,928, less the two downsample3d time_convs
  // ([192, 192, 3, 1, 1] and [384, 384, 3, 1, 1] with biases) that a one-frame encode never reads.
  const int64_t time_convs = (192 * 192 * 3 + 192) + (384 * 384 * 3 + 384);
  CHECK(source->counts["encoder"] + source->counts["quant_conv"] == 53596928 - time_convs);
  CHECK(source->counts["quant_conv"] == 32 * 32 + 32);
}

TEST_CASE("qwen_image image latents: the strength rule truncates the schedule as upstream",
          "[qwen_image][img2img]") {
  sched::Schedule full;
  full.timesteps = {1000, 750, 500, 250};
  full.sigmas = {1.0f, 0.75f, 0.5f, 0.25f, 0.0f};
  // N = 4, strength 0.6: init 2.4, t_start = int(1.6) = 1.
  Img2ImgSchedule s = img2img_schedule(full, 0.6);
  CHECK(s.t_start == 1);
  CHECK(s.schedule.timesteps == std::vector<float>({750, 500, 250}));
  CHECK(s.schedule.sigmas == std::vector<float>({0.75f, 0.5f, 0.25f, 0.0f}));
  CHECK(s.first_sigma() == 0.75f);
  CHECK(img2img_schedule(full, 1.0).t_start == 0);   // the whole schedule: pure noise at sigma 1
  CHECK(img2img_schedule(full, 0.25).t_start == 3);  // init 1.0: one step
  CHECK(img2img_schedule(full, 0.49).t_start == 2);  // init 1.96: int(2.04) truncates to 2
  CHECK(img2img_schedule(full, 0.2).t_start == 3);   // init 0.8: int(3.2) still leaves one step
  CHECK_THROWS_WITH(img2img_schedule(full, 0.0), Catch::Contains("no denoising step"));  // only strength 0
  CHECK_THROWS_WITH(img2img_schedule(full, 1.5), Catch::Contains("strength"));
  CHECK_THROWS_WITH(img2img_schedule(full, -0.1), Catch::Contains("strength"));
}

TEST_CASE("qwen_image image latents: img2img initial latents match the pipeline fixture",
          "[qwen_image][img2img][golden]") {
  const verify::Case c(fixture_dir("pipelines/qwenimage_img2img_pipeline_64x96_s4_str0.6_cfg4.0"));
  const VaeConfig config = VaeConfig::from_json(c.config().at("vae"), c.file("config.json") + " [vae]");
  auto source = fixture_source(c, Vae::unread_keys(/*with_encoder=*/true), "vae.safetensors");
  const Vae vae(config, nn::Weights(source, at::kFloat, at::kCPU), /*with_encoder=*/true);
  REQUIRE_NOTHROW(source->check_all_used());

  // The fixture stores the full 4-step schedule; strength 0.6 keeps the last 3 steps.
  const at::Tensor sigmas = c.tensor("out.sigmas"), timesteps = c.tensor("out.timesteps");
  sched::Schedule full;
  full.sigmas.assign(sigmas.data_ptr<float>(), sigmas.data_ptr<float>() + sigmas.numel());
  full.timesteps.assign(timesteps.data_ptr<float>(), timesteps.data_ptr<float>() + timesteps.numel());
  const Img2ImgSchedule kept = img2img_schedule(full, c.scalar("strength"));
  REQUIRE(kept.t_start == 1);
  CHECK(kept.first_sigma() == sigmas[1].item<float>());

  const at::Tensor image = pixels(c.tensor("in.image_0"));  // [1, 3, 64, 96]
  const Vae::Posterior post = img2img_posterior(vae, image);
  const at::Tensor out = img2img_initial_latents(vae, post, c.tensor("in.image_latent_noise"),
                                                 c.tensor("in.noise"), kept.first_sigma());
  const at::Tensor ref = c.tensor("out.initial_latents");  // [1, 96, 16]
  REQUIRE(out.sizes() == ref.sizes());
  const double err = verify::rel_error(out, ref);
  WARN("qwen_image img2img initial latents rel error " << err);
  CHECK(err < 1e-4);

  // A batch of 2 from one image: both rows see the same image latent under their own noise.
  const at::Tensor noise2 = at::cat({c.tensor("in.noise"), c.tensor("in.noise")}, 0);
  const at::Tensor out2 =
      img2img_initial_latents(vae, post, c.tensor("in.image_latent_noise"), noise2, kept.first_sigma());
  REQUIRE(out2.sizes() == at::IntArrayRef({2, 96, 16}));
  CHECK(at::equal(out2[0], out2[1]));
  CHECK(verify::rel_error(out2[1], ref[0]) < 1e-4);
  // The sample noise must have the posterior's shape, the noise a multiple of its batch.
  CHECK_THROWS_AS(img2img_initial_latents(vae, post, c.tensor("in.noise"), c.tensor("in.noise"), 0.5f),
                  Error);
  CHECK_THROWS_AS(img2img_initial_latents(vae, post, c.tensor("in.image_latent_noise"),
                                          c.tensor("in.image_latent_noise"), 0.5f),
                  Error);
  // The image's sides must be multiples of 2 x the VAE factor (the packed tokens' size).
  CHECK_THROWS_WITH(img2img_posterior(vae, at::zeros({1, 3, 64, 90})), Catch::Contains("multiples of"));
}
