// Tokenizer: the Oniguruma regex wrapper, the tokenizer.json interpreter (added tokens, BPE, byte
// fallback, post-processors, decoders, errors), the built-in tiny Tekken tokenizer, the FLUX.2
// prompt tokenization and the time a long prompt takes. Expected regex splits were checked with
// Python's `regex` module, whose semantics equal Oniguruma's for these patterns.
#include <zlib.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "lib/io/json.h"
#include "lib/runtime/error.h"
#include "lib/text/regex.h"
#include "lib/text/tiny_tokenizer.h"
#include "lib/text/tokenizer.h"
#include "lib/text/tokenizer_pipeline.h"
#include "lib/text/utf8.h"
#include "lib/text/verify_tokenizer.h"
#include "models/flux2/prompt.h"
#include "test/unit/fixtures.h"

using namespace ditgen;
using nlohmann::json;

namespace {

const char* kQwenPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::vector<std::string> split(const std::string& pattern, const std::string& text) {
  const text::Regex re(pattern);
  std::vector<std::string> out;
  for (const auto& [b, e] : re.find_all(text)) out.push_back(text.substr(b, e - b));
  return out;
}

using Strings = std::vector<std::string>;
using Ids = std::vector<int64_t>;

// A minimal byte-level BPE tokenizer.json: bytes 'a'..'e' and ' ' (as "Ġ"), a few merges.
json small_bpe_json() {
  json vocab = json::object();
  int id = 0;
  for (const char* t : {"a", "b", "c", "d", "e", "\xC4\xA0" /* Ġ = space */, "ab", "abc",
                        "\xC4\xA0"
                        "a",
                        "de"})
    vocab[t] = id++;
  return json{
      {"added_tokens",
       {{{"id", 100}, {"content", "<x>"}, {"special", true}},
        {{"id", 101}, {"content", "<xy>"}, {"special", true}},
        {{"id", 102}, {"content", "<xyz>"}, {"special", false}},
        {{"id", 103}, {"content", "ea"}, {"special", false}, {"normalized", false}}}},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", kQwenPattern}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"post_processor", {{"type", "ByteLevel"}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"}, {"vocab", vocab}, {"merges", {{"a", "b"}, "ab c", {"\xC4\xA0", "a"}, {"d", "e"}}}}},
  };
}

// A SentencePiece-style tokenizer.json (Gemma 3 layout): Replace(" " -> "▁"), byte fallback, <unk>,
// TemplateProcessing with <bos>, decoder Replace + ByteFallback + Fuse.
json small_sp_json(bool byte_fallback) {
  json vocab = json::object();
  vocab["<pad>"] = 0;
  vocab["<eos>"] = 1;
  vocab["<bos>"] = 2;
  vocab["<unk>"] = 3;
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = 4 + b;
  int id = 260;
  for (const char* t : {"\xE2\x96\x81" /* ▁ */, "h", "i", "\xE2\x96\x81h", "\xE2\x96\x81hi"}) vocab[t] = id++;
  return json{
      {"added_tokens",
       {{{"id", 0}, {"content", "<pad>"}, {"special", true}},
        {{"id", 1}, {"content", "<eos>"}, {"special", true}},
        {{"id", 2}, {"content", "<bos>"}, {"special", true}},
        {{"id", 3}, {"content", "<unk>"}, {"special", true}}}},
      {"normalizer", {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}},
      {"pre_tokenizer",
       {{"type", "Split"},
        {"pattern", {{"String", " "}}},
        {"behavior", "MergedWithPrevious"},
        {"invert", false}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<bos>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<bos>", {{"id", "<bos>"}, {"ids", {2}}, {"tokens", {"<bos>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}}}}}},
      {"model",
       {{"type", "BPE"},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", byte_fallback},
        {"vocab", vocab},
        {"merges", json::array({json::array({"\xE2\x96\x81", "h"}), json::array({"\xE2\x96\x81h", "i"})})}}},
  };
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Regex (Oniguruma)

TEST_CASE("regex: whitespace rules of the Qwen / GPT-4 style pattern", "[tokenizer][regex]") {
  CHECK(split(kQwenPattern, "  leading") == Strings{" ", " leading"});
  // \s+(?!\S): a run before a word gives back its last space; a run at the end is taken whole.
  CHECK(split(kQwenPattern, "a   b  ") == Strings{"a", "  ", " b", "  "});
  // \s*[\r\n]+ ends right after the last CR/LF.
  CHECK(split(kQwenPattern, "x \n\n y") == Strings{"x", " \n\n", " y"});
  // Case-insensitive contractions.
  CHECK(split(kQwenPattern, "I'M don'T") == Strings{"I", "'M", " don", "'T"});
  // Unicode White_Space: U+00A0 and U+2003 are \s, so they prefix the next word.
  CHECK(split(kQwenPattern,
              "a\xC2\xA0"
              "b\xE2\x80\x83"
              "c") == Strings{"a",
                              "\xC2\xA0"
                              "b",
                              "\xE2\x80\x83"
                              "c"});
}

TEST_CASE("regex: the Mistral Tekken pattern", "[tokenizer][regex]") {
  const std::string t = text::kTekkenPattern;
  CHECK(split(t, "HelloWorld FOOBar iPhone ABC") ==
        Strings{"Hello", "World", " FOOBar", " i", "Phone", " ABC"});
  CHECK(split(t, "2024 \xE5\xB9\xB4, caf\xC3\xA9 na\xC3\xAFve \xCE\xA9\xCE\xBC\xCE\xAD\xCE\xB3\xCE\xB1!") ==
        Strings{"2", "0", "2", "4", " \xE5\xB9\xB4", ",", " caf\xC3\xA9", " na\xC3\xAFve",
                " \xCE\xA9\xCE\xBC\xCE\xAD\xCE\xB3\xCE\xB1", "!"});
  CHECK(split(t, "a, b!/\n c  \t\nd") == Strings{"a", ",", " b", "!/\n", " c", "  \t\n", "d"});
  CHECK(split(t, "  leading and   multiple spaces\tand\ttabs\n\nnewlines ") ==
        Strings{" ", " leading", " and", "  ", " multiple", " spaces", "\tand", "\ttabs", "\n\n", "newlines",
                " "});
  CHECK(split(t, "don't I'M") == Strings{"don", "'t", " I", "'M"});
}

TEST_CASE("regex: quantifiers, alternation, groups and lookahead", "[tokenizer][regex]") {
  CHECK(split("a|ab", "ab") == Strings{"a"});               // leftmost-first, not longest
  CHECK(split("a{2,3}", "aaaaa") == Strings{"aaa", "aa"});  // greedy, bounded
  CHECK(split("a{2}", "aaaaa") == Strings{"aa", "aa"});
  CHECK(split("a+?", "aaa") == Strings{"a", "a", "a"});  // lazy
  CHECK(split("a*?b", "aab") == Strings{"aab"});
  CHECK(split("(?>a+)a", "aaa").empty());  // atomic: no give-back
  CHECK(split("a++a", "aaa").empty());     // possessive
  CHECK(split("x(?=y)", "xyxz") == Strings{"x"});
  CHECK(split("x(?!y)", "xyxz") == Strings{"x"});
  CHECK(split("(?:ab)+", "ababa") == Strings{"abab"});
  CHECK(split("(a|b)c", "acbc") == Strings{"ac", "bc"});
  CHECK(split("(?i)abc", "xABCx") == Strings{"ABC"});
  CHECK(split("(?i:s)", "\xC5\xBF") == Strings{"\xC5\xBF"});  // U+017F folds to 's'
  CHECK(split("[^a-c\\s]+", "abxy zc") == Strings{"xy", "z"});
  CHECK(split(R"(\p{Lu}\p{Ll}+)", "HelloWORLD World") == Strings{"Hello", "World"});
  CHECK(split(R"(\P{L}+)", "ab12 cd") == Strings{"12 "});
  CHECK(split(R"(\d+)",
              "a\xD9\xA3\xD9\xA4"
              "5") == Strings{"\xD9\xA3\xD9\xA4"
                              "5"});  // Arabic-Indic digits are \d
  CHECK(split(R"(\x41\u0042\x{43})", "ABC") == Strings{"ABC"});
  CHECK(split("^a|b$", "ab\nab") == Strings{"a", "b", "a", "b"});  // Ruby syntax: ^ $ are line anchors
  CHECK(split(R"(\bab\b)", "ab abc ab") == Strings{"ab", "ab"});
  CHECK(split("a.c", "abc a\nc") == Strings{"abc"});  // `.` stops at a newline
  CHECK(split("(?<=a)b", "abcb") == Strings{"b"});    // lookbehind
  CHECK(split(R"(\p{Han}+)",
              "ab\xE4\xB8\xAD\xE6\x96\x87"
              "cd") == Strings{"\xE4\xB8\xAD\xE6\x96\x87"});  // scripts
  // Byte ranges of multi-byte code points.
  const text::Regex word(R"(\p{L}+)");
  using Spans = std::vector<std::pair<size_t, size_t>>;
  CHECK(word.find_all("\xC3\xA9t\xC3\xA9 1 \xCE\xA9") == Spans{{0, 5}, {8, 10}});
}

TEST_CASE("regex: empty matches are reported as onig's find_iter reports them", "[tokenizer][regex]") {
  using Spans = std::vector<std::pair<size_t, size_t>>;
  // After an empty match the search moves one code point on; the empty match right after a
  // non-empty one is dropped.
  CHECK(text::Regex("a*").find_all("bab") == Spans{{0, 0}, {1, 2}, {3, 3}});
  CHECK(text::Regex("x*").find_all("\xC3\xA9") == Spans{{0, 0}, {2, 2}});
  CHECK(text::Regex("b|(?=x)").find_all("bax") == Spans{{0, 1}});  // the quirk: any next empty match
  CHECK(text::Regex("a*").find_all("") == Spans{{0, 0}});
  CHECK(text::Regex("z").find_all("abc").empty());
}

TEST_CASE("regex: empty matches in Split and Replace follow the tokenizers library", "[tokenizer][regex]") {
  // Replace inserts its content at every empty match; an empty text stays empty.
  auto norm = text::make_normalizer(
      json{{"type", "Replace"}, {"pattern", {{"Regex", "x*"}}}, {"content", "-"}}, "test");
  CHECK(norm->normalize("ab") == "-a-b-");
  CHECK(norm->normalize("") == "");
  // Split: an empty match is a boundary (here between every character) but never a piece.
  auto pre = text::make_pre_tokenizer(
      json{{"type", "Split"}, {"pattern", {{"Regex", "x*"}}}, {"behavior", "Removed"}, {"invert", false}},
      "test");
  std::vector<text::Piece> pieces{{"abxxc", true}};
  pre->split(pieces);
  Strings got;
  for (const auto& p : pieces) got.push_back(p.text);
  CHECK(got == Strings{"a", "b", "c"});
}

TEST_CASE("regex: the wrapper is safe to share between threads", "[tokenizer][regex]") {
  const text::Regex re(kQwenPattern);
  std::string text;
  for (int i = 0; i < 200; ++i) text += "Hello, World! 123 don't  stop\n";
  const auto ref = re.find_all(text);
  std::vector<std::thread> threads;
  std::vector<int> same(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int k = 0; k < 20; ++k) same[t] += re.find_all(text) == ref;
    });
  for (auto& th : threads) th.join();
  for (int n : same) CHECK(n == 20);
}

TEST_CASE("regex: a bad pattern is an error that names the pattern and Oniguruma's message",
          "[tokenizer][regex]") {
  const std::pair<const char*, const char*> cases[] = {
      {"(abc", "end pattern with unmatched parenthesis"},
      {"abc)", "unmatched close parenthesis"},
      {"[a-", "premature end of char-class"},
      {"\\p{NoSuchCategory}", "invalid character property name {NoSuchCategory}"},
      {"*a", "target of repeat operator is not specified"},
      {"\\1", "invalid backref number/name"},
      {"[z-a]", "empty range in char class"}};
  for (const auto& [bad, why] : cases) {
    const std::string msg = error_of([&] { text::Regex re(bad); });
    INFO(bad << " -> " << msg);
    CHECK(msg == std::string("regex '") + bad + "': " + why);
  }
  // Through a tokenizer.json: the stage is named too.
  json j = small_bpe_json();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}};
  const std::string msg = error_of([&] { text::Tokenizer::from_json(j, "bad.json"); });
  INFO(msg);
  CHECK(msg.find("regex '(a'") != std::string::npos);
  CHECK(msg.find("bad.json") != std::string::npos);
  // Text that is not UTF-8 never reaches Oniguruma.
  CHECK(error_of([] { text::Regex("a").find_all("a\xFF"); }).find("not valid UTF-8 (byte 1 of 2)") !=
        std::string::npos);
}

TEST_CASE("utf8: decoding, lossy conversion", "[tokenizer]") {
  CHECK(text::decode_utf8("a\xC3\xA9\xF0\x9F\x90\xB1").cps == std::u32string(U"a\u00e9\U0001F431"));
  CHECK_THROWS_AS(text::decode_utf8("a\xC3"), Error);
  CHECK_FALSE(text::is_valid_utf8("\xED\xA0\x80"));  // surrogate
  CHECK(text::utf8_lossy("a\xF0\x9F\x90"
                         "b") ==
        "a\xEF\xBF\xBD"
        "b");  // one U+FFFD per maximal subpart
  CHECK(text::utf8_lossy("\xFF\xFE") == "\xEF\xBF\xBD\xEF\xBF\xBD");
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json interpreter

TEST_CASE("tokenizer: byte-level BPE, merges as arrays and strings", "[tokenizer]") {
  auto tok = text::Tokenizer::from_json(small_bpe_json(), "small_bpe");
  // "abc" -> ab (rank 0) then abc (rank 1); " a" -> Ġa; "de" -> de.
  CHECK(tok->encode("abc", false) == Ids{7});
  // " abcde" -> Ġ a b c d e: ab (rank 0) beats Ġa (rank 2), then abc, then de.
  CHECK(tok->encode("abc abcde", false) == Ids{7, 5, 7, 9});
  CHECK(tok->decode({7, 5, 7, 9}) == "abc abcde");
  CHECK(tok->encode("", true).empty());  // ByteLevel post-processor adds nothing
  CHECK(tok->vocab_size() == 104);
  CHECK(tok->token_to_id("<xy>") == 101);
  CHECK(tok->token_to_id("abc") == 7);
  CHECK_FALSE(tok->token_to_id("zzz").has_value());
  CHECK(tok->id_to_token(8) == std::string("\xC4\xA0"
                                           "a"));
}

TEST_CASE("tokenizer: added tokens are matched first, leftmost-longest", "[tokenizer]") {
  auto tok = text::Tokenizer::from_json(small_bpe_json(), "small_bpe");
  CHECK(tok->encode("<xyz>", false) == Ids{102});
  CHECK(tok->encode("a<xy>b<x>", false) == Ids{0, 101, 1, 100});
  // '<' and 'x' are not in the vocab and there is no unk token: they are dropped.
  CHECK(tok->encode("<x<xyz>", false) == Ids{102});
  // "ea" is an added token: it splits "deab" before BPE could merge "de" and "ab".
  CHECK(tok->encode("deab", false) == Ids{3, 103, 1});
  CHECK(tok->encode("deb", false) == Ids{9, 1});
  // Decode keeps special tokens unless asked to skip them; non-special added tokens always stay.
  CHECK(tok->decode({0, 101, 1, 102}) == "a<xy>b<xyz>");
  CHECK(tok->decode({0, 101, 1, 102}, true) == "ab<xyz>");
}

TEST_CASE("tokenizer: SentencePiece-style BPE with byte fallback", "[tokenizer]") {
  auto tok = text::Tokenizer::from_json(small_sp_json(true), "small_sp");
  // " hi" -> ▁hi; "€" (E2 82 AC) is not in the vocab -> three byte tokens.
  CHECK(tok->encode(" hi", false) == Ids{264});
  CHECK(tok->encode("hi\xE2\x82\xAC", false) == Ids{261, 262, 4 + 0xE2, 4 + 0x82, 4 + 0xAC});
  CHECK(tok->encode("hi", true) == Ids{2, 261, 262});  // TemplateProcessing prepends <bos>
  CHECK(tok->encode("", true) == Ids{2});
  CHECK(tok->decode({2, 264, 4 + 0xE2, 4 + 0x82, 4 + 0xAC}, true) == " hi\xE2\x82\xAC");
  // An incomplete byte sequence decodes to one U+FFFD per byte.
  CHECK(tok->decode({261, 4 + 0xE2, 4 + 0x82}) == "h\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(tok->decode({2, 261}) == "<bos>h");
}

TEST_CASE("tokenizer: unknown characters become one fused <unk> without byte fallback", "[tokenizer]") {
  auto tok = text::Tokenizer::from_json(small_sp_json(false), "small_sp");
  CHECK(tok->encode("h\xE2\x82\xAC\xE2\x82\xACi", false) == Ids{261, 3, 262});
}

TEST_CASE("tokenizer: malformed tokenizer.json fails with a message naming the problem", "[tokenizer]") {
  auto with = [](const char* key, json value) {
    json j = small_bpe_json();
    j[key] = std::move(value);
    return error_of([&] { text::Tokenizer::from_json(j, "my/tokenizer.json"); });
  };
  std::string m = with("normalizer", {{"type", "Precompiled"}});
  CHECK(m.find("my/tokenizer.json") != std::string::npos);
  CHECK(m.find("normalizer type 'Precompiled'") != std::string::npos);
  m = with("pre_tokenizer", {{"type", "UnicodeScripts"}});
  CHECK(m.find("pre_tokenizer type 'UnicodeScripts'") != std::string::npos);
  m = with("decoder", {{"type", "CTC"}});
  CHECK(m.find("decoder type 'CTC'") != std::string::npos);
  m = with("post_processor", {{"type", "Nope"}});
  CHECK(m.find("post_processor type 'Nope'") != std::string::npos);
  m = with("pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}});
  CHECK(m.find("regex '(a'") != std::string::npos);
  m = with("pre_tokenizer", {{"type", "Split"}, {"pattern", {{"String", "a"}}}, {"behavior", "Sideways"}});
  CHECK(m.find("Sideways") != std::string::npos);

  json j = small_bpe_json();
  j["model"]["type"] = "WordPiece";
  m = error_of([&] { text::Tokenizer::from_json(j, "my/tokenizer.json"); });
  CHECK(m.find("model type 'WordPiece'") != std::string::npos);
  j = small_bpe_json();
  j["model"]["merges"].push_back({"a", "zz"});
  m = error_of([&] { text::Tokenizer::from_json(j, "my/tokenizer.json"); });
  CHECK(m.find("merges[4]") != std::string::npos);
  CHECK(m.find("'zz'") != std::string::npos);
  j = small_bpe_json();
  j["model"]["merges"].push_back("a b c");
  m = error_of([&] { text::Tokenizer::from_json(j, "my/tokenizer.json"); });
  CHECK(m.find("merges[4]") != std::string::npos);
  j = small_bpe_json();
  j.erase("model");
  m = error_of([&] { text::Tokenizer::from_json(j, "my/tokenizer.json"); });
  CHECK(m.find("\"model\"") != std::string::npos);

  // Files: bad JSON, vocab entries that are not ids, merges that are not pairs.
  const std::string path = "/tmp/ditgen_test_tokenizer_bad.json";
  auto file_error = [&](const std::string& content) {
    std::ofstream(path) << content;
    return error_of([&] { text::Tokenizer::from_file(path); });
  };
  m = file_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, ");
  CHECK(m.find(path) != std::string::npos);
  CHECK(m.find("JSON") != std::string::npos);
  m = file_error(R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})");
  CHECK(m.find("model.vocab['a']") != std::string::npos);
  m = file_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a"]]}})");
  CHECK(m.find("model.merges[0]") != std::string::npos);
  std::remove(path.c_str());
  CHECK(error_of([] { text::Tokenizer::from_file("/nonexistent/tokenizer.json"); }).find("/nonexistent") !=
        std::string::npos);
}

TEST_CASE("tokenizer: from_file reads plain and gzip files, and gives what from_json gives", "[tokenizer]") {
  const std::string text = small_bpe_json().dump();
  const std::string plain = "/tmp/ditgen_test_tokenizer_ok.json", packed = plain + ".gz";
  std::ofstream(plain) << text;
  gzFile gz = gzopen(packed.c_str(), "wb");
  REQUIRE(gz != nullptr);
  gzwrite(gz, text.data(), static_cast<unsigned>(text.size()));
  gzclose(gz);
  auto ref = text::Tokenizer::from_json(small_bpe_json(), "small_bpe");
  for (const auto& path : {plain, packed}) {
    auto tok = text::Tokenizer::from_file(path);
    for (const char* s : {"abc abcde", "a<xy>b<x>", "deab e", ""})
      CHECK(tok->encode(s, true) == ref->encode(s, true));
    CHECK(tok->vocab_size() == ref->vocab_size());
  }
  std::remove(plain.c_str());
  std::remove(packed.c_str());
}

TEST_CASE("tokenizer: input that is not UTF-8 is an error", "[tokenizer]") {
  auto tok = text::Tokenizer::from_json(small_bpe_json(), "small_bpe");
  CHECK(error_of([&] { tok->encode("ab\xFF", false); }).find("byte 2") != std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Built-in tiny Tekken tokenizer

TEST_CASE("tiny Tekken tokenizer: layout and round trips", "[tokenizer][tiny]") {
  auto tok = text::tiny_tekken_tokenizer();
  CHECK(tok->vocab_size() == 1500);
  CHECK(tok->token_to_id("<unk>") == 0);
  CHECK(tok->token_to_id("<s>") == 1);
  CHECK(tok->token_to_id("</s>") == 2);
  CHECK(tok->token_to_id("[INST]") == 3);
  CHECK(tok->token_to_id("[/INST]") == 4);
  CHECK(tok->token_to_id("[IMG]") == 10);
  CHECK(tok->token_to_id("<pad>") == 11);
  CHECK(tok->token_to_id("[SYSTEM_PROMPT]") == 17);
  CHECK(tok->token_to_id("[/SYSTEM_PROMPT]") == 18);
  CHECK(tok->token_to_id("<SPECIAL_999>") == 999);
  CHECK(tok->token_to_id("A") == 1000 + 'A');
  CHECK(tok->token_to_id("\xC4\xA0") == 1000 + ' ');  // Ġ stands for the space byte
  const json j = text::tiny_tekken_tokenizer_json();
  CHECK(j["model"]["merges"].size() >= 244);

  for (const std::string& s : std::vector<std::string>{
           "A cat holding a sign that says hello world",
           "  leading and   multiple spaces\tand\ttabs\n\nnewlines ",
           "\xE6\x95\xB0\xE5\xAD\x97 1234567 and 3.14159, emoji \xF0\x9F\x90\xB1\xF0\x9F\x9A\x80 caf\xC3\xA9",
           std::string(flux2::kSystemMessage), "", "x"}) {
    const Ids ids = tok->encode(s, false);
    CHECK(tok->decode(ids) == s);
    for (int64_t id : ids) CHECK(id >= 1000);  // plain text never yields control tokens
    CHECK(tok->encode(s, true).front() == 1);
  }
  // Merges make common words short: " the" is one token.
  CHECK(tok->encode(" the", false).size() == 1);
  CHECK(tok->encode("a photograph of a red fox", false).size() < 12);
  // Control tokens are atomic and special.
  CHECK(tok->encode("[INST]hi[/INST]", false).front() == 3);
  CHECK(tok->encode("[INST]hi[/INST]", false).back() == 4);
  CHECK(tok->decode(tok->encode("<s>[INST]hi[/INST]", false), true) == "hi");
}

// ---------------------------------------------------------------------------------------------
// FLUX.2 prompt

TEST_CASE("flux2: chat template", "[tokenizer][flux2]") {
  const std::string sys =
      "You are an AI that reasons about image descriptions. You give structured responses focusing on object "
      "relationships, object\nattribution and actions without speculation.";
  CHECK(flux2::flux2_chat_prompt("a cat") ==
        "<s>[SYSTEM_PROMPT]" + sys + "[/SYSTEM_PROMPT][INST]a cat[/INST]");
  CHECK(flux2::flux2_chat_prompt("[IMG]a [IMG]cat[IMG]") ==
        "<s>[SYSTEM_PROMPT]" + sys + "[/SYSTEM_PROMPT][INST]a cat[/INST]");
  CHECK(flux2::flux2_chat_prompt("") == "<s>[SYSTEM_PROMPT]" + sys + "[/SYSTEM_PROMPT][INST][/INST]");
}

TEST_CASE("flux2: tokenization pads on the left and truncates on the right", "[tokenizer][flux2]") {
  auto tok = text::tiny_tekken_tokenizer();
  const std::vector<std::string> prompts = {"a red fox in the snow",
                                            "[IMG]a cat holding a sign that says hello world"};
  const auto batch = flux2::flux2_tokenize(*tok, prompts, 96);
  REQUIRE(batch.input_ids.sizes() == at::IntArrayRef({2, 96}));
  REQUIRE(batch.attention_mask.sizes() == at::IntArrayRef({2, 96}));
  CHECK(batch.input_ids.scalar_type() == at::kLong);
  CHECK(batch.attention_mask.scalar_type() == at::kLong);
  for (int64_t b = 0; b < 2; ++b) {
    const Ids ref = tok->encode(flux2::flux2_chat_prompt(prompts[b]), false);
    REQUIRE(static_cast<int64_t>(ref.size()) < 96);
    const int64_t pad = 96 - static_cast<int64_t>(ref.size());
    auto ids = batch.input_ids[b];
    auto mask = batch.attention_mask[b];
    CHECK(mask.sum().item<int64_t>() == static_cast<int64_t>(ref.size()));
    CHECK(ids.slice(0, 0, pad).eq(11).all().item<bool>());
    CHECK(mask.slice(0, 0, pad).eq(0).all().item<bool>());
    CHECK(mask.slice(0, pad).eq(1).all().item<bool>());
    CHECK(ids[pad].item<int64_t>() == 1);       // <s> exactly once
    CHECK(ids[pad + 1].item<int64_t>() == 17);  // [SYSTEM_PROMPT]
    CHECK(ids[95].item<int64_t>() == 4);        // [/INST]
    for (size_t i = 0; i < ref.size(); ++i)
      CHECK(ids[pad + static_cast<int64_t>(i)].item<int64_t>() == ref[i]);
  }
  // The [IMG] of the second prompt was removed: no id 10 anywhere.
  CHECK_FALSE(batch.input_ids.eq(10).any().item<bool>());

  // Truncation keeps the head (the tail, [/INST] included, is lost); no padding then.
  const auto cut = flux2::flux2_tokenize(*tok, {"a red fox in the snow"}, 8);
  const Ids ref = tok->encode(flux2::flux2_chat_prompt("a red fox in the snow"), false);
  CHECK(cut.attention_mask.eq(1).all().item<bool>());
  for (int64_t i = 0; i < 8; ++i) CHECK(cut.input_ids[0][i].item<int64_t>() == ref[i]);
}

TEST_CASE("flux2: a tokenizer without <pad> is an error", "[tokenizer][flux2]") {
  auto tok = text::Tokenizer::from_json(small_bpe_json(), "small_bpe");
  const std::string m = error_of([&] { flux2::flux2_tokenize(*tok, {"abc"}, 16); });
  CHECK(m.find("<pad>") != std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Real tokenizers (fixtures)

TEST_CASE("tokenizer fixtures: Qwen3 and Gemma 3 match the reference", "[tokenizer][golden]") {
  for (const char* name : {"tokenizer_qwen3", "tokenizer_gemma3"}) {
    const std::string dir = fixture_dir(std::string("tokenizers/") + name);
    verify::Report report;
    report.case_name = name;
    text::verify_tokenizer_folder(dir, report);
    CHECK(report.checks.size() == 30);
    for (const auto& c : report.checks) {
      INFO(name << "/" << c.name << ": " << c.detail);
      CHECK(c.pass);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Speed

TEST_CASE("tokenizer: a 100 KB prompt tokenizes in well under a second", "[tokenizer][regex]") {
  // Mixed text: words, capitals, contractions, numbers, punctuation runs, CJK, emoji, accents and
  // whitespace runs, so that every branch of the patterns is taken.
  const std::string unit =
      "A photograph of a red fox, standing in the SNOW at 6:45am; it's 2024-01-31 and don't move!!  \n"
      "\xE6\x95\xB0\xE5\xAD\x97 caf\xC3\xA9 na\xC3\xAFve \xF0\x9F\x90\xB1\xF0\x9F\x9A\x80 x=(a+b)/2 "
      "...\t\tend.\r\n";
  std::string prompt;
  while (prompt.size() < 100 * 1024) prompt += unit;
  struct Case {
    const char* name;
    std::shared_ptr<text::Tokenizer> tok;
  };
  std::vector<Case> cases = {{"tiny Tekken", text::tiny_tekken_tokenizer()},
                             {"tiny Qwen", text::tiny_qwen_tokenizer()}};
  const std::string qwen3 = std::string(DITGEN_FIXTURES) + "/tokenizers/tokenizer_qwen3/tokenizer.json.gz";
  if (io::file_exists(qwen3)) cases.push_back({"Qwen3 (fixture)", text::Tokenizer::from_file(qwen3)});
  for (const auto& c : cases) {
    c.tok->encode("warm up", false);
    const auto t0 = std::chrono::steady_clock::now();
    const Ids ids = c.tok->encode(prompt, false);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s: %zu bytes -> %zu tokens in %.3f s\n", c.name, prompt.size(), ids.size(), s);
    std::fflush(stdout);
    INFO(c.name << ": " << s << " s");
    CHECK(s < 1.0);
    CHECK(c.tok->decode(ids) == prompt);
  }
  // The pattern alone.
  const text::Regex re(text::kTekkenPattern);
  const auto t0 = std::chrono::steady_clock::now();
  const auto spans = re.find_all(prompt);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("Tekken pattern alone: %zu matches in %.3f s\n", spans.size(), s);
  CHECK(s < 1.0);
  REQUIRE_FALSE(spans.empty());
  CHECK(spans.back().second == prompt.size());
}
