// LTX-2 audio: the audio VAE decoder and the vocoder. Config parsing and refusals, packing and
// latent lengths, random-weight shapes and causality, and both modules against the
// ltx2_audio_vae_vocoder fixture (fp32 and bf16).
#include <catch2/catch.hpp>
#include <map>

#include "lib/io/checkpoint.h"
#include "lib/io/json.h"
#include "lib/nn/weights.h"
#include "lib/runtime/error.h"
#include "lib/verify/case.h"
#include "lib/verify/compare.h"
#include "models/ltx2/audio_vae.h"
#include "models/ltx2/vocoder.h"
#include "test/unit/fixtures.h"

using namespace ditgen;
using namespace ditgen::ltx2;

namespace {

constexpr const char* kFixture = "models/ltx2_audio_vae_vocoder";

AudioVaeConfig vae_config(const char* text) {
  return AudioVaeConfig::from_json(nlohmann::json::parse(text), "audio_vae/config.json");
}
VocoderConfig vocoder_config(const char* text) {
  return VocoderConfig::from_json(nlohmann::json::parse(text), "vocoder/config.json");
}

nn::Weights random_weights(at::ScalarType dtype = at::kFloat) {
  return nn::Weights(std::make_shared<nn::RandomSource>(11), dtype, at::kCPU);
}

std::shared_ptr<nn::CheckpointSource> fixture_source(const verify::Case& c, const std::string& file,
                                                     std::vector<std::string> ignore = {}) {
  return std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({c.file(file)}), "",
                                                std::move(ignore));
}

struct FixtureModels {
  AudioVae vae;
  Vocoder vocoder;
};

FixtureModels load_fixture(const verify::Case& c, at::ScalarType dtype) {
  const std::string where = c.file("config.json");
  auto vae_source = fixture_source(c, "weights.safetensors", AudioVae::unread_keys());
  auto voc_source = fixture_source(c, "vocoder.safetensors");
  FixtureModels m{AudioVae(AudioVaeConfig::from_json(c.config()["audio_vae"], where),
                           nn::Weights(vae_source, dtype, at::kCPU)),
                  Vocoder(VocoderConfig::from_json(c.config()["vocoder"], where),
                          nn::Weights(voc_source, dtype, at::kCPU))};
  vae_source->check_all_used();
  voc_source->check_all_used();
  return m;
}

bool all_finite(const at::Tensor& t) { return at::isfinite(t).all().item<bool>(); }

}  // namespace

TEST_CASE("ltx2 audio: config defaults are the real LTX-2.0 values", "[ltx2][audio]") {
  const AudioVaeConfig a = AudioVaeConfig::from_json(nlohmann::json::object(), "audio_vae/config.json");
  CHECK(a.base_channels == 128);
  CHECK(a.output_channels == 2);
  CHECK(a.ch_mult == std::vector<int64_t>({1, 2, 4}));
  CHECK(a.num_res_blocks == 2);
  CHECK(a.latent_channels == 8);
  CHECK(a.mel_bins == 64);
  CHECK(a.sample_rate == 16000);
  CHECK(a.mel_hop_length == 160);
  CHECK(a.norm_type == "pixel");
  CHECK(a.causality_axis == "height");
  CHECK(a.is_causal);
  CHECK(a.latent_mel_bins() == 16);
  CHECK(a.packed_features() == 128);
  CHECK(AudioVaeConfig::mel_frames(126) == 501);

  const VocoderConfig v = VocoderConfig::from_json(nlohmann::json::object(), "vocoder/config.json");
  CHECK(v.in_channels == 128);
  CHECK(v.hidden_channels == 1024);
  CHECK(v.out_channels == 2);
  CHECK(v.upsample_kernel_sizes == std::vector<int64_t>({16, 15, 8, 4, 4}));
  CHECK(v.upsample_factors == std::vector<int64_t>({6, 5, 2, 2, 2}));
  CHECK(v.resnet_kernel_sizes == std::vector<int64_t>({3, 7, 11}));
  CHECK(v.resnet_dilations == std::vector<std::vector<int64_t>>(3, {1, 3, 5}));
  CHECK(v.leaky_relu_negative_slope == Approx(0.1));
  CHECK(v.final_act_fn == "tanh");
  CHECK(v.final_bias);
  CHECK(v.output_sampling_rate == 24000);
  CHECK(v.upsample_factor() == 240);

  // Keys the real files carry that the decoder does not need are accepted.
  const AudioVaeConfig real = vae_config(R"({"in_channels": 2, "resolution": 256, "double_z": true,
    "dropout": 0.0, "attn_resolutions": null, "mid_block_add_attention": false, "causality_axis": "height"})");
  CHECK(real.base_channels == 128);
  CHECK(vocoder_config(R"({"final_act_fn": null})").final_act_fn == "none");
}

TEST_CASE("ltx2 audio: config refusals name the file and the key", "[ltx2][audio]") {
  using Catch::Contains;
  const auto vae = [](const char* text) { return vae_config(text); };
  CHECK_THROWS_WITH(vae(R"({"attn_resolutions": [4]})"),
                    Contains("audio_vae/config.json") && Contains("attn_resolutions"));
  CHECK_THROWS_WITH(vae(R"({"mid_block_add_attention": true})"), Contains("mid_block_add_attention"));
  CHECK_THROWS_WITH(vae(R"({"norm_type": "group"})"), Contains("norm_type") && Contains("group"));
  CHECK_THROWS_WITH(vae(R"({"causality_axis": "width"})"), Contains("causality_axis") && Contains("width"));
  CHECK_THROWS_WITH(vae(R"({"causality_axis": null})"), Contains("causality_axis") && Contains("none"));
  CHECK_THROWS_WITH(vae(R"({"is_causal": false})"), Contains("is_causal"));
  CHECK_THROWS_WITH(vae(R"({"resamp_with_conv": false})"), Contains("resamp_with_conv"));
  CHECK_THROWS_WITH(vae(R"({"mel_bins": 62})"), Contains("mel_bins"));
  CHECK_THROWS_WITH(vae(R"({"mel_bins": null})"), Contains("mel_bins"));
  CHECK_THROWS_WITH(vae(R"({"base_channels": 0})"), Contains("base_channels"));
  CHECK_THROWS_WITH(vae(R"({"ch_mult": []})"), Contains("ch_mult"));
  CHECK_THROWS_WITH(vae(R"({"ch_mult": [1, 0]})"), Contains("ch_mult"));
  CHECK_THROWS_WITH(vae(R"({"num_res_blocks": 1.5})"), Contains("num_res_blocks"));
  CHECK_THROWS_WITH(vae("[]"), Contains("audio_vae/config.json"));

  const auto voc = [](const char* text) { return vocoder_config(text); };
  CHECK_THROWS_WITH(voc(R"({"act_fn": "snakebeta"})"), Contains("vocoder/config.json") && Contains("act_fn"));
  CHECK_THROWS_WITH(voc(R"({"antialias": true})"), Contains("antialias"));
  CHECK_THROWS_WITH(voc(R"({"final_act_fn": "relu"})"), Contains("final_act_fn"));
  CHECK_THROWS_WITH(voc(R"({"upsample_kernel_sizes": [16, 15, 8, 4]})"),
                    Contains("upsample_kernel_sizes") && Contains("upsample_factors"));
  CHECK_THROWS_WITH(voc(R"({"upsample_kernel_sizes": [15, 15, 8, 4, 4]})"), Contains("upsample_kernel_sizes"));
  CHECK_THROWS_WITH(voc(R"({"upsample_factors": [6, 0, 2, 2, 2]})"), Contains("upsample_factors"));
  CHECK_THROWS_WITH(voc(R"({"hidden_channels": 1000})"), Contains("hidden_channels"));
  CHECK_THROWS_WITH(voc(R"({"resnet_dilations": [[1, 3, 5]]})"),
                    Contains("resnet_dilations") && Contains("resnet_kernel_sizes"));
  CHECK_THROWS_WITH(voc(R"({"resnet_dilations": [[1, 3, 5], [], [1]]})"), Contains("resnet_dilations"));
  CHECK_THROWS_WITH(voc(R"({"in_channels": -1})"), Contains("in_channels"));
}

TEST_CASE("ltx2 audio: latent length rounds half to even like Python", "[ltx2][audio]") {
  const AudioVaeConfig c;
  CHECK(c.latent_length(121, 24.0) == 126);  // 126.04
  CHECK(c.latent_length(1, 2.0) == 12);      // 12.5 -> 12
  CHECK(c.latent_length(3, 2.0) == 38);      // 37.5 -> 38
  CHECK(c.latent_length(25, 25.0) == 25);
  CHECK_THROWS_AS(c.latent_length(0, 24.0), Error);
  // The config's sample rate and hop take part: 8 kHz halves the rate of latent rows.
  CHECK(vae_config(R"({"sample_rate": 8000})").latent_length(121, 24.0) == 63);  // 63.02
}

TEST_CASE("ltx2 audio: pack and unpack are inverse, feature = c * M' + m", "[ltx2][audio]") {
  // The real packing (8 channels x 16 latent mel bins) on a decoder of base width 4.
  const AudioVae vae(vae_config(R"({"base_channels": 4})"), random_weights());
  const int64_t b = 2, l = 3;
  const at::Tensor z = at::arange(b * 8 * l * 16, at::kFloat).view({b, 8, l, 16});
  const at::Tensor packed = vae.pack(z);
  REQUIRE(packed.sizes() == at::IntArrayRef({b, l, 128}));
  for (int64_t c : {0, 3, 7})
    for (int64_t m : {0, 5, 15})
      CHECK(packed.select(2, c * 16 + m).equal(z.select(3, m).select(1, c)));
  const at::Tensor back = vae.unpack(packed);
  CHECK(back.equal(z));
  CHECK(back.is_contiguous());
  CHECK_THROWS_AS(vae.unpack(at::zeros({1, 3, 127})), Error);
  CHECK_THROWS_AS(vae.pack(at::zeros({1, 7, 3, 16})), Error);
  // latents_mean/std have base_channels (4) entries: they cannot be applied to 128 features.
  CHECK_THROWS_WITH(vae.denormalize_packed(packed), Catch::Contains("base_channels"));
}

TEST_CASE("ltx2 audio: denormalize_packed is x * std + mean per packed feature", "[ltx2][audio]") {
  // base_channels equals the packed width 2 * (32 / 4), as 128 = 8 * 16 does in the real config.
  const AudioVaeConfig config = vae_config(R"({"base_channels": 16, "ch_mult": [1], "num_res_blocks": 0,
    "latent_channels": 2, "mel_bins": 32})");
  REQUIRE(config.packed_features() == 16);
  auto source = std::make_shared<nn::RandomSource>(5);
  const nn::Weights wb(source, at::kFloat, at::kCPU);
  const AudioVae vae(config, wb);
  const at::Tensor mean = wb.get("latents_mean", {16}, nn::Shard::replicated(), nn::Init::Mean);
  const at::Tensor stdev = wb.get("latents_std", {16}, nn::Shard::replicated(), nn::Init::Variance);
  const at::Tensor x = at::randn({2, 5, 16});
  const at::Tensor d = vae.denormalize_packed(x);
  CHECK(at::allclose(d, x * stdev + mean, 1e-6, 1e-6));
  CHECK(vae.denormalize_packed(x.to(at::kBFloat16)).scalar_type() == at::kBFloat16);
  // No upsampler: L rows of 8 mel bins are decoded, then zero-padded to 4L-3 rows of 32 bins.
  const at::Tensor mel = vae.decode(vae.unpack(d));
  REQUIRE(mel.sizes() == at::IntArrayRef({2, 2, 17, 32}));
  CHECK(mel.narrow(2, 5, 12).abs().max().item<float>() == 0);
  CHECK(mel.narrow(3, 8, 24).abs().max().item<float>() == 0);
  CHECK(mel.narrow(2, 0, 5).narrow(3, 0, 8).abs().max().item<float>() > 0);
}

TEST_CASE("ltx2 audio: a random decoder at the real layout is causal in time", "[ltx2][audio]") {
  const AudioVae vae(vae_config(R"({"base_channels": 4})"), random_weights());
  const int64_t l = 5;
  at::Tensor z = at::randn({1, 8, l, 16});
  const at::Tensor mel = vae.decode(z);
  REQUIRE(mel.sizes() == at::IntArrayRef({1, 2, 4 * l - 3, 64}));
  CHECK(all_finite(mel));
  // Latent row i reaches mel rows >= 4i-3 only: changing the last row keeps the first 4L-7.
  z.select(2, l - 1).normal_();
  const at::Tensor changed = vae.decode(z);
  const auto max_diff = [&](int64_t from, int64_t rows) {
    return (changed.narrow(2, from, rows) - mel.narrow(2, from, rows)).abs().max().item<double>();
  };
  CHECK(max_diff(0, 4 * l - 7) < 1e-6);
  CHECK(max_diff(4 * l - 7, 4) > 1e-3);
  // Another latent mel width still decodes (cropped / padded to mel_bins); another channel count does not.
  CHECK(vae.decode(at::randn({1, 8, l, 8})).sizes() == at::IntArrayRef({1, 2, 4 * l - 3, 64}));
  CHECK_THROWS_AS(vae.decode(at::randn({1, 4, l, 16})), Error);
}

TEST_CASE("ltx2 audio: vocoder output is T * prod(upsample_factors) samples", "[ltx2][audio]") {
  // Odd and even resnet kernels (torch's "same" padding puts the odd zero on the right).
  const VocoderConfig config = vocoder_config(R"({"in_channels": 10, "hidden_channels": 16, "out_channels": 2,
    "upsample_kernel_sizes": [7, 4], "upsample_factors": [3, 2], "resnet_kernel_sizes": [3, 4],
    "resnet_dilations": [[1, 2], [1]], "output_sampling_rate": 16000})");
  const Vocoder vocoder(config, random_weights());
  CHECK(vocoder.sample_rate() == 16000);
  const at::Tensor wave = vocoder.forward(at::randn({2, 2, 7, 5}));
  REQUIRE(wave.sizes() == at::IntArrayRef({2, 2, 7 * 6}));
  CHECK(all_finite(wave));
  CHECK(wave.abs().max().item<float>() <= 1);
  CHECK(wave.std().item<float>() > 1e-4);
  const at::Tensor wave_bf16 = Vocoder(config, random_weights(at::kBFloat16)).forward(at::randn({1, 2, 3, 5}));
  CHECK(wave_bf16.scalar_type() == at::kBFloat16);
  CHECK(wave_bf16.size(2) == 18);
  CHECK_THROWS_AS(vocoder.forward(at::randn({1, 2, 7, 4})), Error);  // 2 * 4 != in_channels
}

TEST_CASE("ltx2 audio: decoder and vocoder match the ltx2_audio_vae_vocoder fixture",
          "[ltx2][audio][golden]") {
  const verify::Case c(fixture_dir(kFixture));
  {
    // Without the ignore list the encoder's tensors are reported.
    auto strict = fixture_source(c, "weights.safetensors");
    const AudioVae vae(AudioVaeConfig::from_json(c.config()["audio_vae"], "config.json"),
                       nn::Weights(strict, at::kFloat, at::kCPU));
    CHECK_THROWS_WITH(strict->check_all_used(), Catch::Contains("encoder."));
  }
  const FixtureModels m = load_fixture(c, at::kFloat);
  const at::Tensor ref_mel = c.tensor("out.mel");  // [1, 2, 21, 16]
  const at::Tensor mel = m.vae.decode(c.tensor("in.latents"));
  REQUIRE(mel.sizes() == ref_mel.sizes());
  const double mel_err = verify::rel_error(mel, ref_mel);
  WARN("ltx2 audio VAE fp32 mel rel error " << mel_err);
  CHECK(mel_err < 1e-4);

  const at::Tensor ref_wave = c.tensor("out.waveform");  // [1, 2, 84]
  const at::Tensor wave = m.vocoder.forward(ref_mel);
  REQUIRE(wave.sizes() == ref_wave.sizes());
  const double wave_err = verify::rel_error(wave, ref_wave);
  WARN("ltx2 vocoder fp32 waveform rel error " << wave_err);
  CHECK(wave_err < 1e-4);
  // The chain on our own mel.
  CHECK(verify::rel_error(m.vocoder.forward(mel), ref_wave) < 1e-4);
}

TEST_CASE("ltx2 audio: bfloat16 decoder and vocoder stay close to fp32", "[ltx2][audio][golden]") {
  const verify::Case c(fixture_dir(kFixture));
  const FixtureModels fp32 = load_fixture(c, at::kFloat);
  const FixtureModels bf16 = load_fixture(c, at::kBFloat16);
  const at::Tensor latents = c.tensor("in.latents");
  const at::Tensor mel = bf16.vae.decode(latents);
  CHECK(mel.scalar_type() == at::kBFloat16);
  const double mel_err = verify::rel_error(mel, fp32.vae.decode(latents));
  const at::Tensor ref_mel = c.tensor("out.mel");
  const at::Tensor wave = bf16.vocoder.forward(ref_mel);
  CHECK(wave.scalar_type() == at::kBFloat16);
  const double wave_err = verify::rel_error(wave, fp32.vocoder.forward(ref_mel));
  WARN("ltx2 audio bf16 vs fp32 rel error: mel " << mel_err << ", waveform " << wave_err);
  CHECK(mel_err < 3e-2);
  CHECK(wave_err < 3e-2);
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

TEST_CASE("ltx2 audio: the real configs declare the diffusers parameter counts", "[ltx2][audio]") {
  // ltx2.md 0: audio VAE decoder 31,915,138 (+ the two [128] buffers), vocoder 55,592,802.
  auto vae_counts = std::make_shared<CountingSource>();
  const AudioVae vae(AudioVaeConfig{}, nn::Weights(vae_counts, at::kFloat, at::kCPU));
  CHECK(vae_counts->counts["decoder"] == 31915138);
  CHECK(vae_counts->counts["latents_mean"] == 128);
  CHECK(vae_counts->counts["latents_std"] == 128);
  CHECK(vae_counts->counts.count("encoder") == 0);

  auto voc_counts = std::make_shared<CountingSource>();
  const Vocoder vocoder(VocoderConfig{}, nn::Weights(voc_counts, at::kFloat, at::kCPU));
  int64_t total = 0;
  for (const auto& kv : voc_counts->counts) total += kv.second;
  CHECK(total == 55592802);
}
