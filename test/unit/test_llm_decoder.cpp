// Decoder-LLM text encoder: config parsing, checkpoint prefixes, padding semantics on random weights.
#include <catch2/catch.hpp>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "lib/io/checkpoint.h"
#include "lib/nn/weights.h"
#include "lib/runtime/error.h"
#include "models/llm/decoder.h"

using namespace ditgen;
using nlohmann::json;

namespace {

json tiny_mistral() {
  return json{{"vocab_size", 50},         {"hidden_size", 32},        {"intermediate_size", 48},
              {"num_hidden_layers", 3},   {"num_attention_heads", 4}, {"num_key_value_heads", 2},
              {"head_dim", 12},           {"rms_norm_eps", 1e-5},     {"rope_theta", 1e9},
              {"sliding_window", nullptr}};
}

json tiny_gemma() {
  return json{{"model_type", "gemma3_text"}, {"vocab_size", 50},
              {"hidden_size", 32},           {"intermediate_size", 48},
              {"num_hidden_layers", 4},      {"num_attention_heads", 4},
              {"num_key_value_heads", 2},    {"head_dim", 8},
              {"query_pre_attn_scalar", 16}, {"sliding_window", 3},
              {"sliding_window_pattern", 2}};
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Writes a safetensors file with the given F32 tensor names (each [2]) and returns its path.
std::string write_store(const std::string& name, const std::vector<std::string>& keys) {
  json h = json::object();
  size_t off = 0;
  for (const auto& k : keys) {
    h[k] = {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {off, off + 8}}};
    off += 8;
  }
  std::string hs = h.dump();
  const std::string path = "/tmp/ditgen_test_llm_" + name + ".safetensors";
  std::ofstream f(path, std::ios::binary);
  uint64_t n = hs.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << hs;
  std::string zeros(off, '\0');
  f << zeros;
  return path;
}

llm::DecoderLM random_model(const json& j, uint64_t seed = 7) {
  auto cfg = llm::DecoderConfig::from_json(j, "test config");
  return llm::DecoderLM(cfg, nn::Weights(std::make_shared<nn::RandomSource>(seed), at::kFloat, at::kCPU));
}

// A sum over threads standing in for a TP group (every rank adds in the same order).
class ThreadAllReduce {
 public:
  explicit ThreadAllReduce(int n) : n_(n), slots_(n) {}
  void all_reduce(int rank, at::Tensor& t) {
    slots_[rank] = t.clone();
    barrier();
    at::Tensor sum = slots_[0].clone();
    for (int i = 1; i < n_; ++i) sum += slots_[i];
    barrier();  // nobody overwrites a slot before everyone has read it
    t.copy_(sum);
  }

 private:
  void barrier() {
    std::unique_lock<std::mutex> lock(m_);
    const int gen = gen_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen_ != gen; });
    }
  }
  int n_;
  std::vector<at::Tensor> slots_;
  std::mutex m_;
  std::condition_variable cv_;
  int arrived_ = 0, gen_ = 0;
};

double rel(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).norm().item<double>() / b.norm().item<double>();
}

// Left padding by `pad` must give the unpadded results on the real tokens (Mistral/Gemma: RoPE is
// relative, pads are masked as keys).
void check_left_padding(const json& j) {
  auto lm = random_model(j);
  const int layers = lm.config().num_hidden_layers;
  std::vector<int> all;
  for (int k = 0; k <= layers; ++k) all.push_back(k);
  at::Tensor ids = at::randint(1, 50, {1, 7}, at::kLong);
  const int64_t pad = 4;
  at::Tensor padded = at::cat({at::full({1, pad}, 0, at::kLong), ids}, 1);
  at::Tensor mask = at::cat({at::zeros({1, pad}, at::kLong), at::ones({1, 7}, at::kLong)}, 1);
  auto ref = lm.forward(ids, at::ones_like(ids), all);
  auto got = lm.forward(padded, mask, all);
  for (int k = 0; k <= layers; ++k) {
    INFO("hidden state " << k);
    CHECK(rel(got[k].narrow(1, pad, 7), ref[k]) < 1e-5);
    CHECK(at::isfinite(got[k]).all().item<bool>());  // pad rows see no key: attention 0, not NaN
  }
}

}  // namespace

TEST_CASE("llm config: Mistral plain and wrapped, explicit head_dim", "[llm]") {
  auto c = llm::DecoderConfig::from_json(tiny_mistral(), "cfg.json");
  CHECK(c.family == llm::DecoderFamily::Mistral);
  CHECK(c.head_dim == 12);
  CHECK(c.rope_global.theta == 1e9);
  CHECK(c.sliding_window == 0);
  CHECK(c.num_key_value_heads == 2);

  json wrapped = {
      {"model_type", "mistral3"}, {"text_config", tiny_mistral()}, {"vision_config", json::object()}};
  wrapped["text_config"]["model_type"] = "mistral";
  auto w = llm::DecoderConfig::from_json(wrapped, "cfg.json");
  CHECK(w.family == llm::DecoderFamily::Mistral);
  CHECK(w.hidden_size == 32);
  CHECK(w.head_dim == 12);

  // No head_dim: hidden / heads.
  json j = tiny_mistral();
  j.erase("head_dim");
  CHECK(llm::DecoderConfig::from_json(j, "cfg.json").head_dim == 8);
}

TEST_CASE("llm config: errors name the file and the key", "[llm]") {
  json j = tiny_mistral();
  j.erase("num_hidden_layers");
  auto e = error_of([&] { llm::DecoderConfig::from_json(j, "/x/config.json"); });
  CHECK_THAT(e, Catch::Contains("/x/config.json") && Catch::Contains("num_hidden_layers"));

  j = tiny_mistral();
  j["hidden_size"] = "big";
  e = error_of([&] { llm::DecoderConfig::from_json(j, "/x/config.json"); });
  CHECK_THAT(e, Catch::Contains("hidden_size") && Catch::Contains("must be an integer"));

  j = tiny_mistral();
  j["hidden_size"] = 32.5;  // not truncated to 32
  e = error_of([&] { llm::DecoderConfig::from_json(j, "/x/config.json"); });
  CHECK_THAT(e, Catch::Contains("hidden_size") && Catch::Contains("must be an integer, got 32.5"));

  j = tiny_mistral();
  j["rms_norm_eps"] = 0;
  e = error_of([&] { llm::DecoderConfig::from_json(j, "/x/config.json"); });
  CHECK_THAT(e, Catch::Contains("rms_norm_eps") && Catch::Contains("must be positive"));

  j = tiny_mistral();
  j["num_key_value_heads"] = 3;
  e = error_of([&] { llm::DecoderConfig::from_json(j, "/x/config.json"); });
  CHECK_THAT(e, Catch::Contains("num_key_value_heads"));

  j = tiny_mistral();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  e = error_of([&] { llm::DecoderConfig::from_json(j, "/x/config.json"); });
  CHECK_THAT(e, Catch::Contains("rope_scaling") && Catch::Contains("yarn"));

  json wrapped = {{"model_type", "bert"}, {"text_config", tiny_mistral()}};
  e = error_of([&] { llm::DecoderConfig::from_json(wrapped, "/x/config.json"); });
  CHECK_THAT(e, Catch::Contains("bert"));

  j = tiny_mistral();
  j["model_type"] = "gemma3_text";
  e = error_of([&] { llm::DecoderConfig::from_json(j, "/x/config.json", llm::DecoderFamily::Mistral); });
  CHECK_THAT(e, Catch::Contains("gemma3") && Catch::Contains("mistral"));
}

TEST_CASE("llm config: Qwen2.5-VL and Gemma 3 switches", "[llm]") {
  json q = {{"text_config",
             {{"hidden_size", 32},
              {"intermediate_size", 48},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"rope_scaling", {{"type", "mrope"}, {"mrope_section", {1, 1, 2}}}},
              {"rope_theta", 1e6}}},
            {"vocab_size", 50}};  // older configs keep some keys at the top level
  auto qc = llm::DecoderConfig::from_json(q, "cfg.json");
  CHECK(qc.family == llm::DecoderFamily::Qwen2);
  CHECK(qc.qkv_bias);
  CHECK(qc.vocab_size == 50);
  CHECK(qc.rope_global.theta == 1e6);

  auto g = llm::DecoderConfig::from_json(tiny_gemma(), "cfg.json");
  CHECK(g.family == llm::DecoderFamily::Gemma3);
  CHECK(g.layer_is_sliding == std::vector<bool>{true, false, true, false});
  CHECK(g.sliding_window == 3);
  CHECK(g.rope_local.theta == 1e4);
  CHECK(g.rope_global.theta == 1e6);
  CHECK(g.attention_scale() == Approx(0.25));
  CHECK(g.hidden_act == llm::Activation::GeluTanh);

  json g5 = tiny_gemma();
  g5["layer_types"] = {"full_attention", "sliding_attention", "full_attention", "full_attention"};
  g5["rope_parameters"] = {
      {"full_attention", {{"rope_type", "linear"}, {"rope_theta", 1e6}, {"factor", 8.0}}},
      {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 1e4}}}};
  auto g5c = llm::DecoderConfig::from_json(g5, "cfg.json");
  CHECK(g5c.layer_is_sliding == std::vector<bool>{false, true, false, false});
  CHECK(g5c.rope_global.linear_factor == 8.0);
  CHECK(g5c.rope_local.theta == 1e4);
}

TEST_CASE("llm prefixes: root detection and ignore list", "[llm]") {
  const std::map<std::string, std::string> cases = {
      {"plain", ""},
      {"qwen_legacy", "model."},
      {"mistral3_legacy", "language_model.model."},
      {"new", "model.language_model."},
  };
  for (const auto& [name, root] : cases) {
    auto store = io::TensorStore::open_files(
        {write_store(name, {root + "embed_tokens.weight", root + "norm.weight", "lm_head.weight"})});
    CHECK(llm::detect_decoder_root(*store) == root);
  }
  auto bad = io::TensorStore::open_files({write_store("bad", {"encoder.embed.weight"})});
  auto e = error_of([&] { llm::detect_decoder_root(*bad); });
  CHECK_THAT(e, Catch::Contains("model.language_model.embed_tokens.weight") &&
                    Catch::Contains("language_model.model.embed_tokens.weight"));

  auto cfg = llm::DecoderConfig::from_json(tiny_mistral(), "cfg.json");
  auto ig = llm::decoder_ignore_prefixes("language_model.model.", cfg, 1);
  auto has = [&](const std::string& p) { return std::find(ig.begin(), ig.end(), p) != ig.end(); };
  CHECK(has("language_model.model.layers.1."));
  CHECK(has("language_model.model.layers.2."));
  CHECK_FALSE(has("language_model.model.layers.0."));
  CHECK(has("language_model.model.norm."));
  CHECK(has("language_model.lm_head."));
  CHECK(has("vision_tower."));
  CHECK(has("multi_modal_projector."));
  auto all = llm::decoder_ignore_prefixes("", cfg, 3);
  CHECK(std::find(all.begin(), all.end(), "norm.") == all.end());
}

TEST_CASE("llm decoder: left padding equals unpadded on real tokens (Mistral)", "[llm]") {
  check_left_padding(tiny_mistral());
}

TEST_CASE("llm decoder: left padding equals unpadded on real tokens (Gemma 3, sliding window)", "[llm]") {
  check_left_padding(tiny_gemma());
}

TEST_CASE("llm decoder: fully masked rows are finite; layer subsets and ordering", "[llm]") {
  auto j = tiny_mistral();
  auto lm = random_model(j);
  at::Tensor ids = at::randint(0, 50, {2, 6}, at::kLong);
  at::Tensor mask = at::ones({2, 6}, at::kLong);
  mask[1].zero_();  // a row with no real token at all
  auto all = lm.forward(ids, mask, {0, 1, 2, 3});
  for (const auto& t : all) CHECK(at::isfinite(t).all().item<bool>());
  // Row 0 is unaffected by row 1.
  auto solo = lm.forward(ids.narrow(0, 0, 1), mask.narrow(0, 0, 1), {3});
  CHECK(rel(all[3].narrow(0, 0, 1), solo[0]) < 1e-6);
  // Order and negative indices follow the request.
  auto some = lm.forward(ids, mask, {-1, 2});
  CHECK(at::equal(some[0], all[3]));
  CHECK(at::equal(some[1], all[2]));

  // Loading fewer layers: the same states, no final norm.
  auto cfg = llm::DecoderConfig::from_json(j, "cfg.json");
  llm::DecoderLM part(cfg, nn::Weights(std::make_shared<nn::RandomSource>(7), at::kFloat, at::kCPU), 2);
  CHECK(part.num_layers_loaded() == 2);
  CHECK(at::equal(part.forward(ids, mask, {2})[0], all[2]));
  CHECK_THAT(error_of([&] { part.forward(ids, mask, {3}); }), Catch::Contains("not loaded"));
}

TEST_CASE("llm decoder: Qwen2.5-VL right padding keeps real tokens", "[llm]") {
  json q = {{"model_type", "qwen2_5_vl_text"},
            {"vocab_size", 50},
            {"hidden_size", 32},
            {"intermediate_size", 48},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 4},
            {"num_key_value_heads", 2},
            {"rope_scaling", {{"type", "mrope"}, {"mrope_section", {1, 1, 2}}}}};
  auto lm = random_model(q);
  at::Tensor ids = at::randint(1, 50, {1, 5}, at::kLong);
  at::Tensor padded = at::cat({ids, at::zeros({1, 3}, at::kLong)}, 1);
  at::Tensor mask = at::cat({at::ones({1, 5}, at::kLong), at::zeros({1, 3}, at::kLong)}, 1);
  auto ref = lm.forward(ids, at::Tensor(), {2});
  auto got = lm.forward(padded, mask, {2});
  CHECK(rel(got[0].narrow(1, 0, 5), ref[0]) < 1e-6);
}

TEST_CASE("llm decoder: TE-P slices at any rank count", "[llm]") {
  auto cfg = llm::DecoderConfig::from_json(tiny_mistral(), "cfg.json");  // 4 heads, 2 KV heads, MLP 48, vocab 50
  // 3 ranks: heads 2+1+1; rank 0's two heads read KV head 0, ranks 1 and 2 both hold KV head 1.
  auto t0 = llm::tp_slices(cfg, {0, 3}), t1 = llm::tp_slices(cfg, {1, 3}), t2 = llm::tp_slices(cfg, {2, 3});
  CHECK((t0.head0 == 0 && t0.heads == 2 && t0.kv0 == 0 && t0.kv_heads == 1));
  CHECK((t1.head0 == 2 && t1.heads == 1 && t1.kv0 == 1 && t1.kv_heads == 1));
  CHECK((t2.head0 == 3 && t2.heads == 1 && t2.kv0 == 1 && t2.kv_heads == 1));
  CHECK((t0.ff == 16 && t2.ff0 == 32 && t0.vocab == 17 && t2.vocab == 16));
  // 8 ranks: four hold one head each, four none.
  CHECK(llm::tp_slices(cfg, {5, 8}).heads == 0);
  CHECK(llm::tp_slices(cfg, {5, 8}).kv_heads == 0);
  const std::string d = llm::describe_tp(cfg, 8);
  CHECK_THAT(d, Catch::Contains("4 query heads as 1+1+1+1+0+0+0+0"));
  CHECK_THAT(d, Catch::Contains("2 replicated"));
  CHECK_THAT(d, Catch::Contains("4 rank(s) hold no attention head"));
  CHECK_THAT(llm::describe_tp(cfg, 3), Catch::Contains("uneven head split"));
}

TEST_CASE("llm decoder: TE-P over 2, 3, 4, 5 and 8 ranks equals one rank (all three families)", "[llm]") {
  json q = {{"model_type", "qwen2"},   {"vocab_size", 50},       {"hidden_size", 32},
            {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 8},
            {"num_key_value_heads", 2}};  // 3 ranks: rank 1's heads 3, 4, 5 read KV heads 0, 1, 1 (not grouped)
  for (const json& j : {tiny_mistral(), tiny_gemma(), q}) {
    auto cfg = llm::DecoderConfig::from_json(j, "cfg.json");
    auto src = std::make_shared<nn::RandomSource>(7);
    at::Tensor ids = at::randint(0, 50, {2, 6}, at::kLong);
    at::Tensor mask = at::ones({2, 6}, at::kLong);
    mask[1].narrow(0, 0, 2).zero_();
    std::vector<int> all;
    for (int k = 0; k <= cfg.num_hidden_layers; ++k) all.push_back(k);
    auto ref = llm::DecoderLM(cfg, nn::Weights(src, at::kFloat, at::kCPU)).forward(ids, mask, all);
    for (int n : {2, 3, 4, 5, 8}) {
      // Each rank in its own thread with an in-process all-reduce.
      ThreadAllReduce group(n);
      std::vector<std::vector<at::Tensor>> outs(n);
      std::vector<std::thread> ranks;
      for (int r = 0; r < n; ++r)
        ranks.emplace_back([&, r] {
          llm::DecoderLM lm(cfg, nn::Weights(src, at::kFloat, at::kCPU, nn::TpGroup{r, n}), -1,
                            [&group, r](at::Tensor& t) { group.all_reduce(r, t); });
          outs[r] = lm.forward(ids, mask, all);
        });
      for (auto& t : ranks) t.join();
      for (size_t k = 0; k < all.size(); ++k) {
        INFO(llm::family_name(cfg.family) << " on " << n << " ranks, hidden state " << k);
        CHECK(rel(outs[0][k], ref[k]) < 1e-5);
        CHECK(at::equal(outs[0][k], outs[n - 1][k]));
      }
    }
  }
}

TEST_CASE("llm decoder: bfloat16 runs close to float32 (all three families)", "[llm]") {
  json q = {{"model_type", "qwen2"},   {"vocab_size", 50},       {"hidden_size", 32},
            {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
            {"num_key_value_heads", 2}};
  for (const json& j : {tiny_mistral(), tiny_gemma(), q}) {
    auto cfg = llm::DecoderConfig::from_json(j, "cfg.json");
    INFO(llm::family_name(cfg.family));
    auto src = std::make_shared<nn::RandomSource>(3);
    llm::DecoderLM f32(cfg, nn::Weights(src, at::kFloat, at::kCPU));
    llm::DecoderLM bf16(cfg, nn::Weights(src, at::kBFloat16, at::kCPU));
    at::Tensor ids = at::randint(0, 50, {2, 6}, at::kLong);
    at::Tensor mask = at::ones({2, 6}, at::kLong);
    mask[1].narrow(0, 0, 3).zero_();
    auto a = f32.forward(ids, mask, {-1})[0];
    auto b = bf16.forward(ids, mask, {-1})[0];
    CHECK(b.scalar_type() == at::kBFloat16);
    CHECK(at::isfinite(b).all().item<bool>());
    CHECK(rel(b.to(at::kFloat), a) < 5e-2);
  }
}
