// LoRA merged at load (lib/nn/lora.h): the merge on every kind of slice, the key layouts of each model
// against the same LoRA in diffusers layout, scales, and the refusals.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "lib/io/checkpoint.h"
#include "lib/nn/lora.h"
#include "lib/runtime/error.h"
#include "test/unit/checkpoint_util.h"

using namespace ditgen;
using Catch::Contains;

namespace {

std::string temp_dir(const std::string& name) { return test::temp_dir("lora_" + name); }
using test::randn;

// One weight's LoRA: A [r, in], B [out, r].
struct Pair {
  at::Tensor A, B;
};
Pair pair(int64_t out, int64_t in, int64_t r, uint64_t seed) { return {randn({r, in}, seed), randn({out, r}, seed + 1)}; }

std::shared_ptr<nn::WeightSource> lora_source(std::shared_ptr<nn::WeightSource> base, const std::string& file, double scale,
                                              nn::LoraModel model, const std::string& component = "transformer") {
  auto set = std::make_shared<const nn::LoraSet>(std::vector<nn::LoraFile>{{file, scale}}, model);
  return nn::lora_wrapper(set)(component, std::move(base));
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

void expect_close(const at::Tensor& a, const at::Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  const double rel = (a - b).norm().item<double>() / std::max(b.norm().item<double>(), 1e-30);
  INFO("relative error " << rel);
  CHECK(rel < 1e-6);
}

}  // namespace

TEST_CASE("LoRA flag: FILE and FILE:SCALE are parsed, a bad scale or a missing file names the flag", "[lora]") {
  const std::string dir = temp_dir("flag");
  const std::string f = dir + "/a.safetensors";
  test::write_file(f, {{"x.lora_A.weight", test::stored(at::ones({1, 2}))}});
  auto p = nn::parse_lora_flag(f);
  CHECK(p.path == f);
  CHECK(p.scale == 1.0);
  p = nn::parse_lora_flag(f + ":0.25");
  CHECK(p.path == f);
  CHECK(p.scale == 0.25);
  CHECK(nn::parse_lora_flag(f + ":-1").scale == -1.0);
  CHECK_THROWS_WITH(nn::parse_lora_flag(f + ":abc"), Contains("--lora") && Contains("SCALE 'abc' is not a number"));
  CHECK_THROWS_WITH(nn::parse_lora_flag(f + ":inf"), Contains("--lora") && Contains("not a finite number"));
  CHECK_THROWS_WITH(nn::parse_lora_flag(dir + "/missing.safetensors:0.5"), Contains("--lora") && Contains("no such file"));
  CHECK_THROWS_WITH(nn::parse_lora_flag(":0.5"), Contains("--lora") && Contains("FILE is empty"));
  // A file whose name has a ':' is that file.
  const std::string colon = dir + "/b:1.safetensors";
  test::write_file(colon, {{"x.lora_A.weight", test::stored(at::ones({1, 2}))}});
  CHECK(nn::parse_lora_flag(colon).path == colon);
  CHECK(nn::lora_flag_error(f + ":0.5").empty());
}

TEST_CASE("LoRA merges W + s alpha/r B A into every slice: rows, fused rows, columns", "[lora]") {
  const std::string dir = temp_dir("merge");
  const int64_t out = 24, in = 16, r = 4;
  const at::Tensor W = randn({out, in}, 1);
  test::write_file(dir + "/base.safetensors", {{"blk.proj.weight", test::stored(W)}});
  const Pair p = pair(out, in, r, 2);
  const float alpha = 2.0f;  // scale alpha / r = 0.5
  const std::string lora = dir + "/lora.safetensors";
  test::write_file(lora, {{"transformer.blk.proj.lora_A.weight", test::stored(p.A)},
                          {"transformer.blk.proj.lora_B.weight", test::stored(p.B)},
                          {"transformer.blk.proj.alpha", test::stored(at::full({}, alpha))}});
  auto base = [&] {
    return std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({dir + "/base.safetensors"}));
  };
  const double s = 0.8;
  const at::Tensor merged = W + s * (alpha / r) * at::matmul(p.B, p.A);

  auto src = lora_source(base(), lora, s, nn::LoraModel::Flux2);
  expect_close(load(*src, "blk.proj.weight", {out, in}), merged);
  // Column-parallel (rows of B), a fused layout's piece (several ranges), row-parallel (columns of A).
  for (const io::Slice& sl : {slice(0, {{8, 8}}), slice(0, {{2, 4}, {10, 4}, {20, 4}}), slice(1, {{4, 4}, {12, 4}})})
    expect_close(load(*src, "blk.proj.weight", {out, in}, sl), cut(merged, sl));
  // The model dtype: the float32 merge, rounded once.
  CHECK(at::equal(load(*src, "blk.proj.weight", {out, in}, io::Slice::whole(), at::kBFloat16),
                  merged.to(at::kBFloat16)));
  CHECK_NOTHROW(src->check_all_used());

  // SCALE 0: the plain weight bit for bit, in any dtype.
  auto zero = lora_source(base(), lora, 0.0, nn::LoraModel::Flux2);
  CHECK(at::equal(load(*zero, "blk.proj.weight", {out, in}), W));
  CHECK(at::equal(load(*zero, "blk.proj.weight", {out, in}, slice(0, {{8, 8}}), at::kBFloat16),
                  load(*base(), "blk.proj.weight", {out, in}, slice(0, {{8, 8}}), at::kBFloat16)));

  // Several files add up, each at its own scale.
  const Pair q = pair(out, in, 2, 5);
  const std::string lora2 = dir + "/lora2.safetensors";
  test::write_file(lora2, {{"transformer.blk.proj.lora_A.weight", test::stored(q.A)},
                           {"transformer.blk.proj.lora_B.weight", test::stored(q.B)}});
  auto set = std::make_shared<const nn::LoraSet>(std::vector<nn::LoraFile>{{lora, s}, {lora2, -0.5}}, nn::LoraModel::Flux2);
  auto both = nn::lora_wrapper(set)("transformer", base());
  expect_close(load(*both, "blk.proj.weight", {out, in}, slice(1, {{0, 8}})),
               cut(merged - 0.5 * at::matmul(q.B, q.A), slice(1, {{0, 8}})));
  REQUIRE(set->summary().size() == 2);
  CHECK(set->summary()[0].layers == 1);
  CHECK(set->summary()[1].scale == -0.5);
  // Components the LoRA does not touch pass through.
  auto vae = nn::lora_wrapper(set)("vae", base());
  CHECK(at::equal(load(*vae, "blk.proj.weight", {out, in}), W));
}

TEST_CASE("LoRA: diffusers' lora_adapter_metadata gives alpha / r, with its patterns", "[lora]") {
  const std::string dir = temp_dir("meta");
  auto base = std::make_shared<nn::RandomSource>(7);
  const Pair a = pair(8, 8, 4, 11), b = pair(8, 8, 2, 13);
  const std::string f = dir + "/lora.safetensors";
  const nlohmann::json meta = {{"transformer.r", 4},
                               {"transformer.lora_alpha", 8},
                               {"transformer.rank_pattern", {{"^blocks.1.proj", 2}}},
                               {"transformer.alpha_pattern", {{"^blocks.1.proj", 1}}}};
  test::write_file(f, {{"transformer.blocks.0.proj.lora_A.weight", test::stored(a.A)},
                       {"transformer.blocks.0.proj.lora_B.weight", test::stored(a.B)},
                       {"transformer.blocks.1.proj.lora_A.weight", test::stored(b.A)},
                       {"transformer.blocks.1.proj.lora_B.weight", test::stored(b.B)}},
                   {{"format", "pt"}, {"lora_adapter_metadata", meta.dump()}});
  auto src = lora_source(base, f, 1.0, nn::LoraModel::QwenImage);
  nn::RandomSource plain(7);
  expect_close(load(*src, "blocks.0.proj.weight", {8, 8}), load(plain, "blocks.0.proj.weight", {8, 8}) + 2.0 * at::matmul(a.B, a.A));
  expect_close(load(*src, "blocks.1.proj.weight", {8, 8}), load(plain, "blocks.1.proj.weight", {8, 8}) + 0.5 * at::matmul(b.B, b.A));
}

TEST_CASE("LoRA layouts of FLUX.2: kohya and BFL names give the diffusers layout's weights", "[lora]") {
  const std::string dir = temp_dir("flux2");
  const int64_t D = 16, F = 24, r = 4;
  // The same adapter three ways: fused BFL qkv (A shared, B [3D, r]), single-block linear1, img_in, and
  // the final modulation whose halves BFL stores as (shift, scale) and diffusers as (scale, shift).
  const Pair qkv = pair(3 * D, D, r, 21), lin1 = pair(3 * D + 2 * F, D, r, 23), img_in = pair(D, 8, r, 25);
  const Pair mod = pair(2 * D, D, r, 27), txt_mlp = pair(2 * F, D, r, 29);
  const at::Tensor alpha = at::full({}, 8.0f);  // alpha / r = 2
  auto st = test::stored;
  test::write_file(dir + "/kohya.safetensors",
                   {{"lora_unet_double_blocks_1_img_attn_qkv.lora_down.weight", st(qkv.A)},
                    {"lora_unet_double_blocks_1_img_attn_qkv.lora_up.weight", st(qkv.B)},
                    {"lora_unet_double_blocks_1_img_attn_qkv.alpha", st(alpha)},
                    {"lora_unet_double_blocks_0_txt_mlp_0.lora_down.weight", st(txt_mlp.A)},
                    {"lora_unet_double_blocks_0_txt_mlp_0.lora_up.weight", st(txt_mlp.B)},
                    {"lora_unet_double_blocks_0_txt_mlp_0.alpha", st(alpha)},
                    {"lora_unet_single_blocks_0_linear1.lora_down.weight", st(lin1.A)},
                    {"lora_unet_single_blocks_0_linear1.lora_up.weight", st(lin1.B)},
                    {"lora_unet_single_blocks_0_linear1.alpha", st(alpha)},
                    {"lora_unet_img_in.lora_down.weight", st(img_in.A)},
                    {"lora_unet_img_in.lora_up.weight", st(img_in.B)},
                    {"lora_unet_img_in.alpha", st(alpha)}});
  test::write_file(dir + "/bfl.safetensors",
                   {{"diffusion_model.double_blocks.1.img_attn.qkv.lora_A.weight", st(qkv.A)},
                    {"diffusion_model.double_blocks.1.img_attn.qkv.lora_B.weight", st(qkv.B)},
                    {"diffusion_model.double_blocks.1.img_attn.qkv.alpha", st(alpha)},
                    {"diffusion_model.double_blocks.0.txt_mlp.0.lora_A.weight", st(txt_mlp.A)},
                    {"diffusion_model.double_blocks.0.txt_mlp.0.lora_B.weight", st(txt_mlp.B)},
                    {"diffusion_model.double_blocks.0.txt_mlp.0.alpha", st(alpha)},
                    {"diffusion_model.single_blocks.0.linear1.lora_A.weight", st(lin1.A)},
                    {"diffusion_model.single_blocks.0.linear1.lora_B.weight", st(lin1.B)},
                    {"diffusion_model.single_blocks.0.linear1.alpha", st(alpha)},
                    {"diffusion_model.img_in.lora_down.weight", st(img_in.A)},
                    {"diffusion_model.img_in.lora_up.weight", st(img_in.B)},
                    {"diffusion_model.img_in.alpha", st(alpha)},
                    {"diffusion_model.final_layer.adaLN_modulation.1.lora_A.weight", st(mod.A)},
                    {"diffusion_model.final_layer.adaLN_modulation.1.lora_B.weight", st(mod.B)},
                    {"diffusion_model.final_layer.adaLN_modulation.1.alpha", st(alpha)}});
  const at::Tensor modB_diffusers = at::cat({mod.B.narrow(0, D, D), mod.B.narrow(0, 0, D)}, 0);  // (scale, shift)
  std::map<std::string, test::Stored> diffusers_tensors;
  auto add = [&](const std::string& m, const at::Tensor& A, const at::Tensor& B) {
    diffusers_tensors["transformer." + m + ".lora_A.weight"] = st(A);
    diffusers_tensors["transformer." + m + ".lora_B.weight"] = st(B);
    diffusers_tensors["transformer." + m + ".alpha"] = st(alpha);
  };
  const char* qkv_names[3] = {"to_q", "to_k", "to_v"};
  for (int i = 0; i < 3; ++i)
    add(std::string("transformer_blocks.1.attn.") + qkv_names[i], qkv.A, qkv.B.narrow(0, i * D, D).contiguous());
  add("transformer_blocks.0.ff_context.linear_in", txt_mlp.A, txt_mlp.B);
  add("single_transformer_blocks.0.attn.to_qkv_mlp_proj", lin1.A, lin1.B);
  add("x_embedder", img_in.A, img_in.B);
  test::write_file(dir + "/diffusers_kohya_part.safetensors", diffusers_tensors);
  add("norm_out.linear", mod.A, modB_diffusers);
  test::write_file(dir + "/diffusers.safetensors", diffusers_tensors);

  const std::vector<std::pair<std::string, std::vector<int64_t>>> weights = {
      {"transformer_blocks.1.attn.to_q.weight", {D, D}},
      {"transformer_blocks.1.attn.to_k.weight", {D, D}},
      {"transformer_blocks.1.attn.to_v.weight", {D, D}},
      {"transformer_blocks.0.ff_context.linear_in.weight", {2 * F, D}},
      {"single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight", {3 * D + 2 * F, D}},
      {"x_embedder.weight", {D, 8}},
      {"norm_out.linear.weight", {2 * D, D}}};
  auto ref = lora_source(std::make_shared<nn::RandomSource>(3), dir + "/diffusers.safetensors", 0.7, nn::LoraModel::Flux2);
  auto ref_kohya =
      lora_source(std::make_shared<nn::RandomSource>(3), dir + "/diffusers_kohya_part.safetensors", 0.7, nn::LoraModel::Flux2);
  auto kohya = lora_source(std::make_shared<nn::RandomSource>(3), dir + "/kohya.safetensors", 0.7, nn::LoraModel::Flux2);
  auto bfl = lora_source(std::make_shared<nn::RandomSource>(3), dir + "/bfl.safetensors", 0.7, nn::LoraModel::Flux2);
  for (const auto& [key, shape] : weights) {
    INFO(key);
    // TP 2, column-parallel with the fused layouts' segments: the layout must not matter.
    io::Slice rows = slice(0, {{0, shape[0] / 2}});
    if (key.find("to_qkv_mlp_proj") != std::string::npos) rows = slice(0, {{0, D / 2}, {D, D / 2}, {2 * D, D / 2}, {3 * D, F / 2}, {3 * D + F, F / 2}});
    const at::Tensor want = load(*ref, key, shape, rows);
    if (key != "norm_out.linear.weight") CHECK(at::equal(load(*kohya, key, shape, rows), load(*ref_kohya, key, shape, rows)));
    CHECK(at::equal(load(*bfl, key, shape, rows), want));
  }
  nn::RandomSource plain(3);
  expect_close(load(*ref, "transformer_blocks.1.attn.to_k.weight", {D, D}),
               load(plain, "transformer_blocks.1.attn.to_k.weight", {D, D}) + 0.7 * 2 * at::matmul(qkv.B.narrow(0, D, D), qkv.A));
}

TEST_CASE("LoRA layouts of Qwen-Image (kohya n-grams) and LTX-2 (original names, connectors)", "[lora]") {
  const std::string dir = temp_dir("qwen_ltx2");
  auto st = test::stored;
  const Pair p = pair(8, 8, 2, 31);
  // Qwen-Image kohya: '_' for '.', except inside protected n-grams.
  const std::vector<std::pair<std::string, std::string>> qwen = {
      {"lora_unet_transformer_blocks_0_attn_add_q_proj", "transformer_blocks.0.attn.add_q_proj"},
      {"lora_unet_transformer_blocks_1_attn_to_add_out", "transformer_blocks.1.attn.to_add_out"},
      {"lora_unet_transformer_blocks_0_attn_to_out_0", "transformer_blocks.0.attn.to_out.0"},
      {"lora_unet_transformer_blocks_0_img_mlp_net_0_proj", "transformer_blocks.0.img_mlp.net.0.proj"},
      {"lora_unet_transformer_blocks_1_txt_mod_1", "transformer_blocks.1.txt_mod.1"},
      {"lora_unet_norm_out_linear", "norm_out.linear"},
      {"lora_unet_time_text_embed_timestep_embedder_linear_1", "time_text_embed.timestep_embedder.linear_1"},
      {"diffusion_model.transformer_blocks.1.attn.to_q", "transformer_blocks.1.attn.to_q"}};
  // LTX-2 original names.
  const std::vector<std::pair<std::string, std::string>> ltx2 = {
      {"diffusion_model.patchify_proj", "proj_in"},
      {"diffusion_model.audio_patchify_proj", "audio_proj_in"},
      {"diffusion_model.adaln_single.linear", "time_embed.linear"},
      {"diffusion_model.audio_adaln_single.emb.timestep_embedder.linear_1", "audio_time_embed.emb.timestep_embedder.linear_1"},
      {"diffusion_model.av_ca_video_scale_shift_adaln_single.linear", "av_cross_attn_video_scale_shift.linear"},
      {"diffusion_model.transformer_blocks.0.attn1.to_q", "transformer_blocks.0.attn1.to_q"}};
  for (const auto* cases : {&qwen, &ltx2}) {
    const nn::LoraModel model = cases == &qwen ? nn::LoraModel::QwenImage : nn::LoraModel::Ltx2;
    std::map<std::string, test::Stored> t;
    for (const auto& [name, module] : *cases) {
      t[name + ".lora_down.weight"] = st(p.A);
      t[name + ".lora_up.weight"] = st(p.B);
    }
    if (model == nn::LoraModel::Ltx2) {
      t["text_embedding_projection.aggregate_embed.lora_A.weight"] = st(p.A);
      t["text_embedding_projection.aggregate_embed.lora_B.weight"] = st(p.B);
    }
    const std::string f = dir + "/" + std::to_string(static_cast<int>(model)) + ".safetensors";
    test::write_file(f, t);
    auto set = std::make_shared<const nn::LoraSet>(std::vector<nn::LoraFile>{{f, 1.0}}, model);
    REQUIRE(set->component("transformer"));
    CHECK(set->component("transformer")->size() == cases->size());
    for (const auto& [name, module] : *cases) {
      INFO(name);
      CHECK(set->component("transformer")->count(module + ".weight") == 1);
    }
    if (model == nn::LoraModel::Ltx2) {
      REQUIRE(set->component("connectors"));
      CHECK(set->component("connectors")->count("text_proj_in.weight") == 1);
      auto src = nn::lora_wrapper(set)("connectors", std::make_shared<nn::RandomSource>(1));
      nn::RandomSource plain(1);
      expect_close(load(*src, "text_proj_in.weight", {8, 8}), load(plain, "text_proj_in.weight", {8, 8}) + at::matmul(p.B, p.A));
    }
  }
}

TEST_CASE("LoRA refusals name the file and the key", "[lora]") {
  const std::string dir = temp_dir("refuse");
  auto st = test::stored;
  const Pair p = pair(8, 8, 2, 41);
  test::write_file(dir + "/base.safetensors", {{"blocks.0.proj.weight", st(randn({8, 8}, 1))}});
  auto base = [&] {
    return std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({dir + "/base.safetensors"}));
  };
  auto file = [&](const std::string& name, std::map<std::string, test::Stored> t,
                  std::map<std::string, std::string> meta = {}) {
    const std::string f = dir + "/" + name + ".safetensors";
    test::write_file(f, t, meta);
    return f;
  };
  auto set_of = [](const std::string& f, nn::LoraModel m) {
    return nn::LoraSet(std::vector<nn::LoraFile>{{f, 1.0}}, m);
  };

  // A layer the checkpoint does not have: refused before loading, naming file and key.
  const std::string other = file("other", {{"transformer.blocks.9.proj.lora_A.weight", st(p.A)},
                                           {"transformer.blocks.9.proj.lora_B.weight", st(p.B)}});
  CHECK_THROWS_WITH(lora_source(base(), other, 1.0, nn::LoraModel::Flux2),
                    Contains("other.safetensors") && Contains("transformer.blocks.9.proj.lora_A.weight") &&
                        Contains("matches no layer"));
  // With random weights (every key exists) the check comes once the model has loaded.
  auto random = lora_source(std::make_shared<nn::RandomSource>(1), other, 1.0, nn::LoraModel::Flux2);
  CHECK_THROWS_WITH(random->check_all_used(), Contains("transformer.blocks.9.proj.lora_A.weight") && Contains("matches no layer"));
  // Another model's layout.
  const std::string bfl = file("bfl", {{"diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight", st(p.A)},
                                       {"diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight", st(pair(24, 8, 2, 1).B)}});
  CHECK_THROWS_WITH(lora_source(base(), bfl, 1.0, nn::LoraModel::QwenImage),
                    Contains("bfl.safetensors") && Contains("double_blocks.0.img_attn.qkv") &&
                        Contains("matches no layer of the Qwen-Image transformer") && Contains("another model"));
  CHECK_THROWS_WITH(lora_source(base(), bfl, 1.0, nn::LoraModel::Ltx2), Contains("matches no layer of the LTX-2 transformer"));
  const std::string qwen_kohya = file("qwen_kohya", {{"lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight", st(p.A)},
                                                     {"lora_unet_transformer_blocks_0_attn_to_q.lora_up.weight", st(p.B)}});
  CHECK_THROWS_WITH(set_of(qwen_kohya, nn::LoraModel::Ltx2),
                    Contains("qwen_kohya.safetensors") && Contains("lora_unet_transformer_blocks_0_attn_to_q") &&
                        Contains("matches no layer of the LTX-2 transformer"));
  // A rank or width that does not fit the layer.
  const std::string wide = file("wide", {{"transformer.blocks.0.proj.lora_A.weight", st(randn({2, 12}, 1))},
                                         {"transformer.blocks.0.proj.lora_B.weight", st(p.B)}});
  auto w = lora_source(base(), wide, 1.0, nn::LoraModel::Flux2);
  CHECK_THROWS_WITH(load(*w, "blocks.0.proj.weight", {8, 8}),
                    Contains("wide.safetensors") && Contains("transformer.blocks.0.proj.lora_A.weight") &&
                        Contains("do not fit layer 'blocks.0.proj.weight'"));
  const std::string rank = file("rank", {{"transformer.blocks.0.proj.lora_A.weight", st(randn({3, 8}, 1))},
                                         {"transformer.blocks.0.proj.lora_B.weight", st(p.B)}});
  CHECK_THROWS_WITH(set_of(rank, nn::LoraModel::Flux2), Contains("rank.safetensors") && Contains("A [r, in] and B [out, r]"));
  // Not LoRA tensors, half a pair, DoRA, text encoder.
  CHECK_THROWS_WITH(set_of(file("junk", {{"transformer.blocks.0.proj.weight", st(p.A)}}), nn::LoraModel::Flux2),
                    Contains("junk.safetensors") && Contains("'transformer.blocks.0.proj.weight' is not a LoRA tensor"));
  CHECK_THROWS_WITH(set_of(file("half", {{"transformer.blocks.0.proj.lora_A.weight", st(p.A)}}), nn::LoraModel::Flux2),
                    Contains("half.safetensors") && Contains("no lora_B"));
  CHECK_THROWS_WITH(set_of(file("dora", {{"transformer.blocks.0.proj.lora_A.weight", st(p.A)},
                                         {"transformer.blocks.0.proj.lora_B.weight", st(p.B)},
                                         {"transformer.blocks.0.proj.lora_magnitude_vector", st(at::ones({8}))}}),
                           nn::LoraModel::Flux2),
                    Contains("DoRA"));
  CHECK_THROWS_WITH(set_of(file("te", {{"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", st(p.A)}}),
                           nn::LoraModel::Flux2),
                    Contains("te.safetensors") && Contains("text encoder"));
  // A kohya FLUX.2 module diffusers' converter does not know.
  CHECK_THROWS_WITH(set_of(file("kohya_odd", {{"lora_unet_double_blocks_0_img_mod_lin.lora_down.weight", st(p.A)},
                                              {"lora_unet_double_blocks_0_img_mod_lin.lora_up.weight", st(p.B)}}),
                           nn::LoraModel::Flux2),
                    Contains("lora_unet_double_blocks_0_img_mod_lin") && Contains("matches no layer"));
  // Metadata whose r disagrees with the tensors.
  CHECK_THROWS_WITH(set_of(file("meta", {{"transformer.blocks.0.proj.lora_A.weight", st(p.A)},
                                         {"transformer.blocks.0.proj.lora_B.weight", st(p.B)}},
                                {{"lora_adapter_metadata", R"({"r": 8, "lora_alpha": 8})"}}),
                           nn::LoraModel::Flux2),
                    Contains("has rank 2") && Contains("r = 8"));
}

TEST_CASE("LoRA on an FP8 checkpoint: merged into the dequantised weight, never handed over as stored", "[lora][fp8]") {
  const std::string dir = temp_dir("fp8");
  const int64_t N = 32, K = 16;
  auto [bits, scale] = test::quantize_e4m3(randn({N, K}, 1), /*per_channel=*/true);
  test::write_file(dir + "/w.safetensors", {{"a.weight", test::f8(bits)},
                                            {"a.weight_scale", test::stored(scale)},
                                            {"b.weight", test::f8(bits)},
                                            {"b.weight_scale", test::stored(scale)}});
  const std::string lora = dir + "/lora.safetensors";
  const at::Tensor A = randn({2, K}, 9), B = randn({N, 2}, 10);
  test::write_file(lora, {{"transformer.b.lora_A.weight", test::stored(A)}, {"transformer.b.lora_B.weight", test::stored(B)}});
  auto merged = lora_source(std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({dir + "/w.safetensors"})),
                            lora, 1.0, nn::LoraModel::Flux2);
  // --fp8 quantises the merged weight rather than taking the stored e4m3 of b; a stays as stored.
  CHECK_FALSE(merged->load_fp8("b.weight", {N, K}, io::Slice::whole(), at::kCPU).has_value());
  CHECK(merged->load_fp8("a.weight", {N, K}, io::Slice::whole(), at::kCPU).has_value());
  expect_close(load(*merged, "b.weight", {N, K}), test::dequantize_e4m3(bits, scale) + at::matmul(B, A));
}
