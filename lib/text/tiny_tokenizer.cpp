#include "lib/text/tiny_tokenizer.h"

#include <map>

#include "lib/runtime/error.h"
#include "lib/text/qwen2_tokenizer.h"
#include "lib/text/regex.h"
#include "lib/text/tokenizer_pipeline.h"

namespace ditgen::text {

const char* const kTekkenPattern =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|)"
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|)"
    R"(\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

constexpr int kNumControl = 1000;
constexpr int kFirstByte = 1000;
constexpr int kVocabSize = 1500;
constexpr size_t kQwenMaxRegular = 1497;  // bytes + merges; the text runs out of repeated pairs first

// Text the merges are learnt from: the FLUX.2 system message and prompt-like sentences, so that
// demo prompts come out in a handful of tokens.
const char* const kTrainingText =
    "You are an AI that reasons about image descriptions. You give structured responses focusing on "
    "object relationships, object\nattribution and actions without speculation.\n"
    "A photograph of a red fox standing in the snow at sunrise, soft golden light, shallow depth of field. "
    "A cat holding a sign that says hello world. A hermit crab living in a soda can on a sandy beach. "
    "An astronaut riding a horse on the moon, highly detailed, digital art. A small wooden house in a "
    "forest next to a river, with mountains in the background and clouds in the sky. "
    "A portrait of an old man with a white beard, wearing a blue hat, in the style of an oil painting. "
    "A bowl of fresh fruit on a kitchen table: apples, oranges, bananas and grapes. "
    "The city at night, with bright lights reflected in the wet street after the rain. "
    "A dog playing with a ball in the green grass of a park on a sunny summer day. "
    "Two children reading a book under a large tree, warm afternoon light, watercolor. "
    "A close-up photo of a flower with drops of water on its petals, macro lens, high resolution. "
    "A robot dancing in a room full of colorful balloons, cinematic lighting, 4k. "
    "The image shows a quiet lake surrounded by tall trees; the water is calm and clear. "
    "A bird flying over the ocean, the waves breaking on the rocks below. "
    "A cup of coffee on a wooden table next to a window, morning light, cozy atmosphere. "
    "A street market with people buying vegetables, fruits and flowers from small stands. "
    "A red car parked in front of a white building with large windows and a blue door. "
    "A snowy mountain landscape with a clear blue sky and a few white clouds. "
    "An illustration of a dragon sitting on top of a castle tower, fantasy art, detailed scales. "
    "A woman walking on the beach at sunset, her long hair moving in the wind. "
    "A bicycle leaning against a brick wall covered with green plants and small yellow flowers. "
    "The text on the sign reads \"Open\" in bold letters; the letters are painted in red and white. "
    "A group of friends sitting around a fire at night under the stars, telling stories. "
    "A glass of orange juice and a plate of pancakes with honey on a breakfast table. "
    "An aerial view of a river that winds through green fields and small villages. "
    "A black and white photo of a train station with people waiting on the platform. "
    "A tiger resting in the shade of a tree in the jungle, its eyes looking at the camera. "
    "A lighthouse standing on a rocky coast during a storm, dark clouds and high waves. "
    "A child building a sand castle on the beach with a bucket and a small shovel. "
    "A still life painting of flowers in a vase on a table, with soft shadows and warm colors. "
    "The kitchen is bright and clean, with white cabinets, a wooden floor and plants on the shelves. "
    "A futuristic city with flying cars and tall glass towers that shine in the evening light. "
    "A musician playing the guitar on a small stage, the crowd watching in the dim light. "
    "A hot air balloon floating above the hills at dawn, the valley covered in mist. "
    "A bakery window with bread, cakes and cookies on display, a chalkboard sign with prices. "
    "The object on the left is a blue box; the object on the right is a green ball, and the ball "
    "is in front of the box. There are three apples, two pears and one lemon in the basket. "
    "A panda eating bamboo in a forest, with light coming through the leaves above.\n";

// The words of the Qwen-Image prompt template (docs/reference/qwen-image.md §4.2, special tokens left
// out), learnt twice over by the tiny Qwen tokenizer so that every word of it becomes one token.
const char* const kQwenImageTemplateText =
    "system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:\nuser\nassistant\n";

// Learns merges on the byte-level words of `text` (split by `pattern`): the most frequent adjacent pair
// first (ties: the smallest pair in byte order), until the vocab reaches `vocab_size` or no pair is seen
// twice.
void learn_merges(const char* pattern, const std::string& text, size_t vocab_size,
                  std::vector<std::string>& vocab, std::vector<std::pair<std::string, std::string>>& merges) {
  const Regex re(pattern);
  std::map<std::string, int> word_count;
  for (const auto& [b, e] : re.find_all(text)) ++word_count[byte_level_encode(text.substr(b, e - b))];

  struct Word {
    std::vector<std::string> syms;
    int count;
  };
  std::vector<Word> words;
  for (const auto& [w, c] : word_count) {
    Word word{{}, c};
    for (size_t i = 0; i < w.size();) {
      const auto b0 = static_cast<unsigned char>(w[i]);
      const size_t n = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xE ? 3 : 4;
      word.syms.push_back(w.substr(i, n));
      i += n;
    }
    words.push_back(std::move(word));
  }
  std::map<std::string, int> known;
  for (size_t i = 0; i < vocab.size(); ++i) known.emplace(vocab[i], static_cast<int>(i));
  while (vocab.size() < vocab_size) {
    std::map<std::pair<std::string, std::string>, int> counts;
    for (const auto& w : words)
      for (size_t i = 0; i + 1 < w.syms.size(); ++i) counts[{w.syms[i], w.syms[i + 1]}] += w.count;
    const std::pair<std::string, std::string>* best = nullptr;
    int best_count = 1;  // a pair seen once teaches nothing
    for (const auto& [pair, c] : counts)
      if (c > best_count) best = &pair, best_count = c;
    if (!best) break;
    const auto pair = *best;
    const std::string merged = pair.first + pair.second;
    merges.push_back(pair);
    if (known.emplace(merged, static_cast<int>(vocab.size())).second) vocab.push_back(merged);
    for (auto& w : words) {
      std::vector<std::string> out;
      for (size_t i = 0; i < w.syms.size(); ++i) {
        if (i + 1 < w.syms.size() && w.syms[i] == pair.first && w.syms[i + 1] == pair.second) {
          out.push_back(merged);
          ++i;
        } else {
          out.push_back(w.syms[i]);
        }
      }
      w.syms.swap(out);
    }
  }
}

nlohmann::json build_tekken_json() {
  using nlohmann::json;
  std::vector<std::string> vocab(kNumControl);
  const std::map<int, std::string> named = {{0, "<unk>"},
                                            {1, "<s>"},
                                            {2, "</s>"},
                                            {3, "[INST]"},
                                            {4, "[/INST]"},
                                            {10, "[IMG]"},
                                            {11, "<pad>"},
                                            {17, "[SYSTEM_PROMPT]"},
                                            {18, "[/SYSTEM_PROMPT]"}};
  for (int i = 0; i < kNumControl; ++i) {
    auto it = named.find(i);
    vocab[i] = it != named.end() ? it->second : "<SPECIAL_" + std::to_string(i) + ">";
  }
  for (int b = 0; b < 256; ++b) vocab.push_back(byte_level_encode(std::string(1, static_cast<char>(b))));
  std::vector<std::pair<std::string, std::string>> merges;
  learn_merges(kTekkenPattern, kTrainingText, kVocabSize, vocab, merges);

  json added = json::array();
  for (int i = 0; i < kNumControl; ++i)
    added.push_back({{"id", i},
                     {"content", vocab[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  json jvocab = json::object();
  for (size_t i = 0; i < vocab.size(); ++i) jvocab[vocab[i]] = i;
  json jmerges = json::array();
  for (const auto& [a, b] : merges) jmerges.push_back({a, b});

  json bos = {{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}};
  return json{
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", kTekkenPattern}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", true},
           {"use_regex", false}}}}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {bos, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {bos,
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          bos,
          {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", true},
        {"vocab", jvocab},
        {"merges", jmerges}}},
  };
}

nlohmann::json build_qwen_json() {
  using nlohmann::json;
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.push_back(byte_level_encode(std::string(1, static_cast<char>(b))));
  std::vector<std::pair<std::string, std::string>> merges;
  learn_merges(kQwen2Pattern, std::string(kQwenImageTemplateText) + kQwenImageTemplateText + kTrainingText,
               kQwenMaxRegular, vocab, merges);

  json jvocab = json::object();
  for (size_t i = 0; i < vocab.size(); ++i) jvocab[vocab[i]] = i;
  json jmerges = json::array();
  for (const auto& [a, b] : merges) jmerges.push_back({a, b});
  json added = json::array();
  int64_t id = static_cast<int64_t>(vocab.size());
  for (const char* t : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"})
    added.push_back({{"id", id++},
                     {"content", t},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  return qwen2_tokenizer_json(std::move(jvocab), std::move(jmerges), std::move(added));
}

}  // namespace

nlohmann::json tiny_tekken_tokenizer_json() {
  static const nlohmann::json j = build_tekken_json();
  return j;
}

std::shared_ptr<Tokenizer> tiny_tekken_tokenizer() {
  static const std::shared_ptr<Tokenizer> tok =
      Tokenizer::from_json(tiny_tekken_tokenizer_json(), "the built-in tiny Tekken tokenizer");
  return tok;
}

nlohmann::json tiny_qwen_tokenizer_json() {
  static const nlohmann::json j = build_qwen_json();
  return j;
}

std::shared_ptr<Tokenizer> tiny_qwen_tokenizer() {
  static const std::shared_ptr<Tokenizer> tok =
      Tokenizer::from_json(tiny_qwen_tokenizer_json(), "the built-in tiny Qwen tokenizer");
  return tok;
}

}  // namespace ditgen::text
