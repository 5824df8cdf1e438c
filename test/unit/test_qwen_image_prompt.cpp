// Qwen-Image text side: Qwen2Tokenizer folders without tokenizer.json, the built-in tiny Qwen tokenizer,
// the chat template and its dropped prefix (docs/reference/qwen-image.md §4.1-4.2), tokenization and
// encode_prompts (§4.3) on a random-weight Qwen2 text model.
#include <sys/stat.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lib/io/json.h"
#include "lib/nn/weights.h"
#include "lib/runtime/error.h"
#include "lib/text/qwen2_tokenizer.h"
#include "lib/text/tiny_tokenizer.h"
#include "lib/text/tokenizer.h"
#include "models/llm/decoder.h"
#include "models/qwen_image/prompt.h"
#include "test/unit/fixtures.h"

using namespace ditgen;
using nlohmann::json;

namespace {

using Ids = std::vector<int64_t>;

const Ids kPrefixIds = {151644, 8948, 198, 74785, 279, 2168,   553, 44193,  279, 1894,  11,    6083,
                        11,     1379, 11,  10434, 11,  12194,  11,  1467,   11,  27979, 11871, 315,
                        279,    6171, 323, 4004,  25,  151645, 198, 151644, 872, 198};
const Ids kSuffixIds = {151645, 198, 151644, 77091, 198};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

double rel(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).norm().item<double>() / b.norm().item<double>();
}

std::string read_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  REQUIRE(f != nullptr);
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  gzclose(f);
  return out;
}

// A fresh empty folder under /tmp.
std::string temp_dir(const std::string& name) {
  const std::string dir = "/tmp/ditgen_test_qwen_" + name;
  std::system(("rm -rf '" + dir + "'").c_str());
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A Qwen2Tokenizer folder (vocab.json, merges.txt with a #version line, tokenizer_config.json) holding
// what the fixture's tokenizer.json holds.
std::string slow_folder_from_fixture(const std::string& fixture) {
  const json j = json::parse(read_gz(fixture + "/tokenizer.json.gz"));
  const std::string dir = temp_dir("slow_qwen3");
  write_file(dir + "/vocab.json", j["model"]["vocab"].dump());
  std::string lines = "#version: 0.2\n";
  for (const auto& m : j["model"]["merges"])
    lines += (m.is_array() ? m[0].get<std::string>() + " " + m[1].get<std::string>() : m.get<std::string>()) +
             "\n";
  write_file(dir + "/merges.txt", lines);
  write_file(dir + "/tokenizer_config.json", io::read_json_file(fixture + "/tokenizer_config.json").dump(1));
  return dir;
}

// A random-weight Qwen2 text model whose vocabulary covers `tok`.
llm::DecoderLM random_qwen2(const text::Tokenizer& tok) {
  const json j = {{"model_type", "qwen2"},   {"vocab_size", tok.vocab_size()}, {"hidden_size", 32},
                  {"intermediate_size", 48}, {"num_hidden_layers", 2},         {"num_attention_heads", 4},
                  {"num_key_value_heads", 2}};
  auto cfg = llm::DecoderConfig::from_json(j, "test config");
  return llm::DecoderLM(cfg, nn::Weights(std::make_shared<nn::RandomSource>(11), at::kFloat, at::kCPU));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Tokenizer folders without tokenizer.json

TEST_CASE("qwen2 tokenizer folder: vocab.json + merges.txt encode like tokenizer.json",
          "[qwen_image][prompt][tokenizer]") {
  const std::string fixture = fixture_dir("tokenizers/tokenizer_qwen3");
  const std::string dir = slow_folder_from_fixture(fixture);
  const auto ref = text::Tokenizer::from_file(fixture);
  const auto slow = text::Tokenizer::from_file(dir);
  // The same document through from_json (vocab and merges in the DOM) gives the same tokenizer.
  const auto dom = text::Tokenizer::from_json(text::qwen2_tokenizer_json_from_folder(dir), "slow folder");
  const json golden = io::read_json_file(fixture + "/golden.json");
  REQUIRE(golden["cases"].size() == 10);
  for (const auto& c : golden["cases"]) {
    const std::string s = c["text"].get<std::string>();
    INFO(s);
    const Ids ids = c["ids"].get<Ids>();
    CHECK(slow->encode(s, false) == ids);
    CHECK(slow->encode(s, true) == c["ids_with_special"].get<Ids>());
    CHECK(dom->encode(s, true) == ref->encode(s, true));
    CHECK(slow->decode(ids) == c["decoded"].get<std::string>());
  }
  CHECK(slow->vocab_size() == ref->vocab_size());
  CHECK(slow->token_to_id("<|endoftext|>") == 151643);
  CHECK(slow->token_to_id("<|im_end|>") == 151645);
  CHECK(slow->token_to_id("</think>") == 151668);
  CHECK(slow->decode({151644, 872, 198, 151643}, true) == "user\n");  // special ones are skipped
  std::system(("rm -rf '" + dir + "'").c_str());
}

TEST_CASE("qwen2 tokenizer folder: added_tokens.json, special_tokens_map.json and errors",
          "[qwen_image][prompt][tokenizer]") {
  const std::string dir = temp_dir("slow_small");
  const std::string G = "\xC4\xA0";  // Ġ = space
  write_file(dir + "/vocab.json",
             json{{"a", 0}, {"b", 1}, {"ab", 2}, {G, 3}, {G + "ab", 4}, {"\xC4\x8A", 5}}.dump());
  write_file(dir + "/merges.txt", "a b\r\n\n" + G + " ab\n");  // no #version line, CRLF and a blank line

  // No tokenizer_config.json: the error names the folder and the file.
  std::string e = error_of([&] { text::Tokenizer::from_file(dir); });
  CHECK_THAT(e, Catch::Contains(dir) && Catch::Contains("tokenizer_config.json"));

  write_file(dir + "/tokenizer_config.json", json{{"tokenizer_class", "GPT2Tokenizer"}}.dump());
  e = error_of([&] { text::Tokenizer::from_file(dir); });
  CHECK_THAT(e,
             Catch::Contains(dir) && Catch::Contains("GPT2Tokenizer") && Catch::Contains("Qwen2Tokenizer"));

  // Added tokens: the config's table, then added_tokens.json, then named special tokens found nowhere.
  write_file(dir + "/tokenizer_config.json",
             json{{"tokenizer_class", "Qwen2Tokenizer"},
                  {"pad_token", "<|endoftext|>"},
                  {"eos_token", {{"content", "<|im_end|>"}, {"__type", "AddedToken"}}},
                  {"added_tokens_decoder",
                   {{"10", {{"content", "<|endoftext|>"}, {"special", true}, {"normalized", false}}}}}}
                 .dump());
  write_file(dir + "/added_tokens.json", json{{"<|endoftext|>", 10}, {"<x>", 12}}.dump());
  write_file(dir + "/special_tokens_map.json",
             json{{"additional_special_tokens", json::array({"<|im_start|>"})}}.dump());
  auto tok = text::Tokenizer::from_file(dir);
  CHECK(tok->token_to_id("<|endoftext|>") == 10);
  CHECK(tok->token_to_id("<x>") == 12);
  CHECK(tok->token_to_id("<|im_end|>") == 13);    // eos, next free id
  CHECK(tok->token_to_id("<|im_start|>") == 14);  // from special_tokens_map.json
  CHECK(tok->vocab_size() == 15);
  CHECK(tok->encode("ab ab<|im_start|>a\n<x>", false) == Ids{2, 4, 14, 0, 5, 12});
  CHECK(tok->decode({2, 4, 14, 13, 12}, true) == "ab ab<x>");  // <x> is not special

  // A bad merges line names the file and the line.
  write_file(dir + "/merges.txt", "#version: 0.2\na b\nab\n");
  e = error_of([&] { text::Tokenizer::from_file(dir); });
  CHECK_THAT(e, Catch::Contains("merges.txt") && Catch::Contains("line 3"));
  std::system(("rm -rf '" + dir + "'").c_str());

  const std::string empty = temp_dir("empty");
  e = error_of([&] { text::Tokenizer::from_file(empty); });
  CHECK_THAT(e, Catch::Contains(empty) && Catch::Contains("tokenizer.json") && Catch::Contains("vocab.json"));
  std::system(("rm -rf '" + empty + "'").c_str());
}

// ---------------------------------------------------------------------------------------------
// Built-in tiny Qwen tokenizer

TEST_CASE("tiny Qwen tokenizer: layout, round trips, a compact template",
          "[qwen_image][prompt][tokenizer][tiny]") {
  auto tok = text::tiny_qwen_tokenizer();
  const int64_t n = tok->vocab_size() - 3;  // regular tokens: bytes and merges
  CHECK(tok->vocab_size() == 621);
  CHECK(tok->token_to_id("<|endoftext|>") == n);
  CHECK(tok->token_to_id("<|im_start|>") == n + 1);
  CHECK(tok->token_to_id("<|im_end|>") == n + 2);
  CHECK(tok->token_to_id("A") == 'A');
  CHECK(tok->token_to_id("\xC4\xA0") == ' ');  // Ġ stands for the space byte
  CHECK(tok->token_to_id("\xC4\x8A") == '\n');
  CHECK(text::tiny_qwen_tokenizer_json()["normalizer"]["type"] == "NFC");

  for (const std::string& s : std::vector<std::string>{
           "A cat holding a sign that says hello world",
           "  leading and   multiple spaces\tand\ttabs\n\nnewlines ",
           "\xE6\x95\xB0\xE5\xAD\x97 1234567 and 3.14159, emoji \xF0\x9F\x90\xB1\xF0\x9F\x9A\x80 caf\xC3\xA9",
           "", "x"}) {
    const Ids ids = tok->encode(s, false);
    CHECK(tok->decode(ids) == s);
    for (int64_t id : ids) CHECK(id < n);  // plain text never yields special tokens
    CHECK(tok->encode(s, true) == ids);    // the ByteLevel post-processor adds nothing
  }
  // The template round-trips, its special tokens are atomic, and every word of it is one token.
  const std::string t = qwen_image::chat_prompt("a red fox in the snow");
  const Ids ids = tok->encode(t, false);
  CHECK(tok->decode(ids) == t);
  CHECK(tok->decode(ids, true) ==
        "system\n" + std::string(qwen_image::kSystemMessage) + "\nuser\na red fox in the snow\nassistant\n");
  CHECK(ids.front() == n + 1);
  CHECK(qwen_image::template_prefix_tokens(*tok) == 34);
  CHECK(tok->encode(qwen_image::kTemplateSuffix, false) ==
        Ids{n + 2, '\n', n + 1, *tok->token_to_id("assistant"), '\n'});
  // Digits are split one by one, as in Qwen's vocabulary.
  CHECK(tok->encode("2024", false) == Ids{'2', '0', '2', '4'});

  // The FLUX.2 tokenizer is untouched by the shared merge learning (its ids fix the FLUX.2 demo images).
  auto tekken = text::tiny_tekken_tokenizer();
  CHECK(tekken->vocab_size() == 1500);
  CHECK(tekken->token_to_id("A") == 1000 + 'A');
}

// ---------------------------------------------------------------------------------------------
// Template and tokenization

TEST_CASE("qwen_image: chat template", "[qwen_image][prompt]") {
  const std::string sys =
      "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial "
      "relationships of "
      "the objects and background:";
  CHECK(qwen_image::kSystemMessage == sys);
  CHECK(qwen_image::chat_prompt("a {cat}") ==
        "<|im_start|>system\n" + sys +
            "<|im_end|>\n<|im_start|>user\na {cat}<|im_end|>\n<|im_start|>"
            "assistant\n");
  CHECK(qwen_image::chat_prompt("") ==
        std::string(qwen_image::kTemplatePrefix) + qwen_image::kTemplateSuffix);
}

TEST_CASE("qwen_image: the Qwen tokenizer gives the 34 prefix ids and the kept ids of the reference",
          "[qwen_image][prompt]") {
  const auto tok = text::Tokenizer::from_file(fixture_dir("tokenizers/tokenizer_qwen3"));
  REQUIRE(qwen_image::template_prefix_tokens(*tok) == 34);
  CHECK(tok->encode(qwen_image::kTemplatePrefix, false) == kPrefixIds);
  const std::vector<std::pair<std::string, Ids>> cases = {
      {"A cat holding a sign that says hello world", {32, 8251, 9963, 264, 1841, 429, 2727, 23811, 1879}},
      {" ", {220}},
      {"dance monkey", {98875, 38703}}};
  for (const auto& [prompt, kept] : cases) {
    INFO(prompt);
    Ids want = kPrefixIds;
    want.insert(want.end(), kept.begin(), kept.end());
    want.insert(want.end(), kSuffixIds.begin(), kSuffixIds.end());
    CHECK(tok->encode(qwen_image::chat_prompt(prompt), false) == want);
  }

  // A batch: right padding with <|endoftext|> (151643) to the longest, mask 1 on real tokens.
  const auto batch = qwen_image::tokenize(
      *tok, {"dance monkey", "A cat holding a sign that says hello world", " "}, 1024 + 34);
  REQUIRE(batch.input_ids.sizes() == at::IntArrayRef({3, 48}));
  CHECK(batch.attention_mask.sum(1).equal(at::tensor({41, 48, 40}, at::kLong)));
  CHECK(batch.input_ids[0].slice(0, 41).eq(151643).all().item<bool>());
  CHECK(batch.input_ids[0][40].item<int64_t>() == 198);
  CHECK(batch.input_ids[2][34].item<int64_t>() == 220);
}

TEST_CASE("qwen_image: tokenize pads and truncates on the right", "[qwen_image][prompt]") {
  auto tok = text::tiny_qwen_tokenizer();
  const int64_t pad = *tok->token_to_id("<|endoftext|>");
  const std::vector<std::string> prompts = {"a red fox in the snow",
                                            "a cat holding a sign that says hello world, "
                                            "in the style of an oil painting"};
  const auto batch = qwen_image::tokenize(*tok, prompts, 1024);
  const Ids a = tok->encode(qwen_image::chat_prompt(prompts[0]), false);
  const Ids b = tok->encode(qwen_image::chat_prompt(prompts[1]), false);
  REQUIRE(a.size() < b.size());
  const auto la = static_cast<int64_t>(a.size()), lb = static_cast<int64_t>(b.size());
  REQUIRE(batch.input_ids.sizes() == at::IntArrayRef({2, lb}));
  CHECK(batch.input_ids.scalar_type() == at::kLong);
  CHECK(batch.attention_mask.scalar_type() == at::kLong);
  for (int64_t i = 0; i < lb; ++i) {
    CHECK(batch.input_ids[0][i].item<int64_t>() == (i < la ? a[i] : pad));
    CHECK(batch.attention_mask[0][i].item<int64_t>() == (i < la ? 1 : 0));
    CHECK(batch.input_ids[1][i].item<int64_t>() == b[i]);
  }
  CHECK(batch.attention_mask[1].eq(1).all().item<bool>());

  // Truncation keeps the head: the suffix is lost; the longest is then max_length, no padding.
  const auto cut = qwen_image::tokenize(*tok, prompts, 40);
  REQUIRE(cut.input_ids.sizes() == at::IntArrayRef({2, 40}));
  CHECK(cut.attention_mask.eq(1).all().item<bool>());
  for (int64_t i = 0; i < 40; ++i) CHECK(cut.input_ids[1][i].item<int64_t>() == b[i]);

  // Tokenizers without the template's special tokens are refused.
  auto tekken = text::tiny_tekken_tokenizer();
  CHECK_THAT(error_of([&] { qwen_image::tokenize(*tekken, {"a"}, 64); }), Catch::Contains("<|im_start|>"));
  CHECK_THAT(error_of([&] { qwen_image::template_prefix_tokens(*tekken); }), Catch::Contains("<|im_start|>"));
  CHECK_THAT(error_of([&] { qwen_image::tokenize(*tok, {}, 64); }), Catch::Contains("no prompts"));
}

// ---------------------------------------------------------------------------------------------
// encode_prompts

TEST_CASE("qwen_image: encode_prompts keeps the real tokens after the prefix", "[qwen_image][prompt]") {
  auto tok = text::tiny_qwen_tokenizer();
  const auto lm = random_qwen2(*tok);
  const int64_t prefix = qwen_image::template_prefix_tokens(*tok);
  const std::vector<std::string> prompts = {"a red fox", "a cat holding a sign that says hello world"};

  // Reference: the final hidden state of each prompt run alone, unpadded, less the prefix.
  std::vector<at::Tensor> solo;
  for (const auto& p : prompts) {
    const Ids ids = tok->encode(qwen_image::chat_prompt(p), false);
    const at::Tensor t = at::tensor(ids, at::kLong).unsqueeze(0);
    const at::Tensor hs = lm.forward(t, at::Tensor(), {2})[0][0];  // [n, 32] after the final norm
    solo.push_back(hs.narrow(0, prefix, hs.size(0) - prefix));
  }
  const int64_t n0 = solo[0].size(0), n1 = solo[1].size(0);
  REQUIRE(n0 < n1);

  const auto pe = qwen_image::encode_prompts(*tok, lm, prompts, 512, at::kFloat, at::kCPU);
  REQUIRE(pe.embeds.sizes() == at::IntArrayRef({2, n1, 32}));
  REQUIRE(pe.mask.defined());
  CHECK(pe.mask.scalar_type() == at::kLong);
  CHECK(pe.mask.sum(1).equal(at::tensor({n0, n1}, at::kLong)));
  CHECK(pe.mask[0].slice(0, n0).eq(0).all().item<bool>());
  CHECK(pe.embeds[0].slice(0, n0).eq(0).all().item<bool>());  // zero rows in the padding
  CHECK(rel(pe.embeds[0].narrow(0, 0, n0), solo[0]) < 1e-5);
  CHECK(rel(pe.embeds[1], solo[1]) < 1e-5);

  // One prompt: no mask, and exactly the solo rows.
  const auto one = qwen_image::encode_prompts(*tok, lm, {prompts[1]}, 512, at::kFloat, at::kCPU);
  CHECK_FALSE(one.mask.defined());
  REQUIRE(one.embeds.sizes() == at::IntArrayRef({1, n1, 32}));
  CHECK(rel(one.embeds[0], solo[1]) < 1e-6);

  // max_sequence_length keeps the first rows; a mask that becomes all ones is dropped.
  const auto cut = qwen_image::encode_prompts(*tok, lm, prompts, n0 + 2, at::kBFloat16, at::kCPU);
  REQUIRE(cut.embeds.sizes() == at::IntArrayRef({2, n0 + 2, 32}));
  CHECK(cut.embeds.scalar_type() == at::kBFloat16);
  CHECK(cut.mask.sum(1).equal(at::tensor({n0, n0 + 2}, at::kLong)));
  CHECK(at::equal(cut.embeds, pe.embeds.narrow(1, 0, n0 + 2).to(at::kBFloat16)));
  const auto all_real = qwen_image::encode_prompts(*tok, lm, prompts, n0, at::kFloat, at::kCPU);
  CHECK_FALSE(all_real.mask.defined());
  CHECK(at::equal(all_real.embeds, pe.embeds.narrow(1, 0, n0)));

  // The reference refuses more than 1024.
  CHECK_THAT(error_of([&] { qwen_image::encode_prompts(*tok, lm, prompts, 1025, at::kFloat, at::kCPU); }),
             Catch::Contains("1025") && Catch::Contains("max_sequence_length"));
  CHECK_THAT(error_of([&] { qwen_image::encode_prompts(*tok, lm, prompts, 0, at::kFloat, at::kCPU); }),
             Catch::Contains("max_sequence_length"));
}
