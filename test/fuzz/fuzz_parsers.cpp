// ditgen_fuzz: hostile inputs for every parser of files a user brings (issue 22).
//
//   ditgen_fuzz run [--seed N] [--count N]   mutants of safetensors headers, configs, index files, presets
//                                            and prompt files through our parsers: each must parse or throw
//                                            ditgen::Error, never crash, never take more than a second of CPU
//   ditgen_fuzz write DIR                    the probe's reproducers as files, for the CLI tests
//
// The generator is deterministic for a seed: a failure prints the seed and the mutant's number, and the
// same command reproduces it.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <random>
#include <string>
#include <typeinfo>
#include <vector>

#include "lib/io/checkpoint.h"
#include "lib/io/json.h"
#include "lib/io/safetensors.h"
#include "lib/pipeline/model.h"
#include "lib/pipeline/prompt_file.h"
#include "lib/pipeline/settings_check.h"
#include "lib/runtime/error.h"
#include "lib/sched/flow_match.h"
#include "models/llm/decoder.h"

namespace {

using ditgen::Error;

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.good()) throw std::runtime_error("cannot write " + path);
}

// A safetensors file: the 8-byte little-endian header length, the header, `data` zero bytes.
std::string safetensors_bytes(const std::string& header, size_t data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + std::string(data, '\0');
}

std::string nested(size_t depth, char open, char close, const std::string& inner = "") {
  return std::string(depth, open) + inner + std::string(depth, close);
}

// {"a":{"a":...{"a":1}...}}: valid JSON objects nested `depth` deep.
std::string nested_objects(size_t depth) {
  std::string s;
  s.reserve(depth * 6);
  for (size_t i = 0; i < depth; ++i) s += "{\"a\":";
  s += "1";
  s.append(depth, '}');
  return s;
}

// {"__metadata__": ..., "t0": {...}, ...}: `n` zero-size tensors, all at offset 0 (a valid tiling).
std::string wide_header(size_t n) {
  std::string h = "{";
  for (size_t i = 0; i < n; ++i)
    h += (i ? "," : "") + std::string("\"t") + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
  return h + "}";
}

const char* kGoodHeader =
    R"({"__metadata__":{"format":"pt"},"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
    R"("b.bias":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]}})";

const char* kDecoderConfig =
    R"({"model_type":"qwen2","hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,)"
    R"("num_attention_heads":4,"num_key_value_heads":2,"vocab_size":100,"rms_norm_eps":1e-6,)"
    R"("rope_theta":10000,"max_position_embeddings":128,"rope_scaling":{"type":"mrope","mrope_section":[2,1,1]}})";

const char* kScheduler =
    R"({"base_image_seq_len":256,"max_image_seq_len":4096,"base_shift":0.5,"max_shift":1.15,)"
    R"("use_dynamic_shifting":true,"shift_terminal":0.02,"num_train_timesteps":1000})";

const char* kPresets = R"({"defaults":{"prompt":"a fox","height":64,"width":64,"steps":2,"guidance":4.0,)"
                       R"("max_sequence_length":32,"text_encoder_out_layers":[1,2]}})";

const char* kPromptFile = "{\"prompt\": \"a\", \"seed\": 1, \"steps\": 2}\n{\"prompt\": \"b\", \"height\": 64}\n";

// Byte-level and structure-aware mutations of a seed text.
class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  std::string mutate(const std::string& text) {
    std::string s = text;
    const int edits = 1 + pick(4);
    for (int e = 0; e < edits; ++e) {
      switch (pick(12)) {
        case 0:  // flip a byte
          if (!s.empty()) s[pick(s.size())] = static_cast<char>(pick(256));
          break;
        case 1:  // drop a span
          if (!s.empty()) {
            const size_t at = pick(s.size());
            s.erase(at, 1 + pick(std::min<size_t>(16, s.size() - at)));
          }
          break;
        case 2:  // duplicate a span (repeated keys, doubled entries)
          if (!s.empty()) {
            const size_t at = pick(s.size()), len = 1 + pick(std::min<size_t>(64, s.size() - at));
            s.insert(pick(s.size() + 1), s.substr(at, len));
          }
          break;
        case 3:  // deep nesting somewhere
          s.insert(pick(s.size() + 1), nested(1 + pick(200000), pick(2) ? '[' : '{', pick(2) ? ']' : '}'));
          break;
        case 4:  // a hostile number
          s.insert(pick(s.size() + 1), pick_of({"1e400", "-1e400", "2.5", "-1", "18446744073709551616", "0",
                                                "1e308", "NaN", "-0", "9223372036854775808", "1000000000"}));
          break;
        case 5:  // replace a number-looking character run
          for (size_t i = 0; i < s.size(); ++i)
            if (std::isdigit(static_cast<unsigned char>(s[i])) && pick(4) == 0) {
              s.replace(i, 1, pick_of({"0", "-1", "2.5", "1e400", "true", "null", "\"x\"", "[]", "{}"}));
              break;
            }
          break;
        case 6:  // invalid UTF-8 / control bytes
          s.insert(pick(s.size() + 1), pick_of({"\xff", "\xc0\xaf", "\xed\xa0\x80", "\x1b[31m", std::string("\0", 1)}));
          break;
        case 7:  // truncate
          s.resize(pick(s.size() + 1));
          break;
        case 8:  // a dtype swap (relabelled tensors)
          for (const char* d : {"F32", "BF16"}) {
            const auto at = s.find(d);
            if (at != std::string::npos) {
              s.replace(at, std::strlen(d), pick_of({"I32", "I16", "BOOL", "F8_E5M2", "U64", "F4", "F64", "C64"}));
              break;
            }
          }
          break;
        case 9:  // a repeated key: the first key again before the last '}'
          if (const auto a = s.find('"'), last = s.rfind('}'); a != std::string::npos && last != std::string::npos) {
            const auto b = s.find('"', a + 1);
            if (b != std::string::npos && b < last) s.insert(last, "," + s.substr(a, b - a + 1) + ":0");
          }
          break;
        case 10:  // many zero-size entries
          if (s.size() > 2 && s[0] == '{') s.insert(1, wide_header(pick(2000)).substr(1, std::string::npos) + ",");
          break;
        default:  // a random insert of JSON punctuation
          s.insert(pick(s.size() + 1), 1, "{}[],:\"\\"[pick(8)]);
          break;
      }
    }
    return s;
  }

  size_t pick(size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }

 private:
  std::string pick_of(std::initializer_list<std::string> options) {
    auto it = options.begin();
    std::advance(it, pick(options.size()));
    return *it;
  }
  std::mt19937_64 rng_;
};

struct Target {
  const char* name;
  std::string seed_text;
  std::function<void(const std::string& text, const std::string& dir)> parse;
};

std::vector<Target> targets() {
  using namespace ditgen;
  return {
      {"json", kDecoderConfig, [](const std::string& t, const std::string&) { io::parse_json(t, "fuzz.json"); }},
      {"safetensors", kGoodHeader,
       [](const std::string& t, const std::string& dir) {
         const std::string path = dir + "/m.safetensors";
         write_file(path, safetensors_bytes(t, 20));
         auto f = io::SafetensorsFile::open(path);
         size_t reads = 0;  // a few reads exercise the dtype and offset checks; 100,000 would time the allocator
         for (const auto& n : f->names())
           if (reads++ < 16) f->read(n, io::Slice::whole(), at::kFloat, at::kCPU);
       }},
      {"safetensors_no_data", "{}",
       [](const std::string& t, const std::string& dir) {
         const std::string path = dir + "/e.safetensors";
         write_file(path, safetensors_bytes(t, 0));
         io::SafetensorsFile::open(path);
       }},
      {"index", R"({"metadata":{"total_size":20},"weight_map":{"a.weight":"m.safetensors","b.bias":"m.safetensors"}})",
       [](const std::string& t, const std::string& dir) {
         const std::string sub = dir + "/component";
         ::mkdir(sub.c_str(), 0755);
         write_file(sub + "/m.safetensors", safetensors_bytes(kGoodHeader, 20));
         write_file(sub + "/m.safetensors.index.json", t);
         auto store = io::TensorStore::open_dir(sub);
         for (const auto& k : store->keys()) store->info(k);
       }},
      {"decoder_config", kDecoderConfig,
       [](const std::string& t, const std::string&) {
         llm::DecoderConfig::from_json(io::parse_json(t, "text_encoder/config.json"), "text_encoder/config.json");
       }},
      {"scheduler", kScheduler,
       [](const std::string& t, const std::string&) {
         sched::FlowMatchConfig::from_json(io::parse_json(t, "scheduler_config.json"), "scheduler_config.json", {})
             .schedule(4, 1024);
       }},
      {"presets", kPresets,
       [](const std::string& t, const std::string& dir) {
         write_file(dir + "/" + pipeline::kPresetsFile, t);
         pipeline::folder_defaults(dir, nlohmann::json::object());
       }},
      {"prompt_file", kPromptFile,
       [](const std::string& t, const std::string&) { pipeline::parse_prompt_file("fuzz.jsonl", t); }},
  };
}

int run(uint64_t seed, int count) {
  char tmpl[] = "/tmp/ditgen_fuzz_XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const auto all = targets();
  Mutator m(seed);
  int parsed = 0, refused = 0, failures = 0;
  bool seeds_parsed = true;
  std::string slowest_what;
  double slowest = 0;
  // The probe's reproducers first (target, text), then the seeds themselves, then mutants.
  auto target = [&](const char* name) {
    for (size_t k = 0; k < all.size(); ++k)
      if (std::string(name) == all[k].name) return k;
    throw std::logic_error(name);
  };
  const std::vector<std::pair<size_t, std::string>> fixed = {
      {target("safetensors"), "{\"a\":" + nested(70000, '[', ']') + "}"},
      {target("safetensors_no_data"), wide_header(100000)},
      {target("presets"), "{\"defaults\":" + nested_objects(200000) + "}"},
      {target("presets"), R"({"defaults":{"steps":1000000000}})"},
      {target("presets"), R"({"defaults":{"steps":2.5,"guidance":-1}})"},
      {target("json"), nested(70000, '[', ']')},
      {target("index"), R"({"weight_map":{"a.weight":"m.safetensors","a.weight":"m.safetensors"}})"},
      {target("prompt_file"), "{\"steps\": 100000}\n{\"height\": 16388}\n"},
  };
  const int n_fixed = static_cast<int>(fixed.size());
  for (int i = 0; i < count + n_fixed; ++i) {
    const int k = i - n_fixed;  // < 0: a fixed case
    const Target& t = k < 0 ? all[fixed[static_cast<size_t>(i)].first] : all[static_cast<size_t>(k) % all.size()];
    const std::string text = k < 0 ? fixed[static_cast<size_t>(i)].second
                                   : k < static_cast<int>(all.size()) ? t.seed_text : m.mutate(t.seed_text);
    const auto start = std::chrono::steady_clock::now();
    const std::clock_t cpu_start = std::clock();
    try {
      t.parse(text, dir);
      ++parsed;
    } catch (const Error& e) {
      ++refused;
      // The seeds themselves must parse: a refusal of good input is a failure too.
      if (k >= 0 && k < static_cast<int>(all.size())) {
        std::printf("FAIL: the seed of %s is refused: %s\n", t.name, e.what());
        seeds_parsed = false;
      }
    } catch (const std::exception& e) {
      std::printf("FAIL seed %llu mutant %d (%s): %s escaped as %s\n", static_cast<unsigned long long>(seed), i,
                  t.name, e.what(), typeid(e).name());
      ++failures;
    }
    // CPU time decides (what the parse costs, whatever else the machine runs); wall time only catches
    // waits (a FIFO, a lock) that cost no CPU.
    const double s = static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (wall > 10.0) {
      std::printf("FAIL seed %llu case %d (%s): waited %.1f s\n", static_cast<unsigned long long>(seed), i, t.name,
                  wall);
      ++failures;
    }
    if (s > slowest) {
      slowest = s;
      slowest_what = std::string(t.name) + (k < 0 ? " (fixed case " + std::to_string(i) + ")" : " mutant " + std::to_string(k));
    }
    if (s > 1.0) {
      std::printf("FAIL seed %llu mutant %d (%s): took %.2f s of CPU (%zu bytes)\n", static_cast<unsigned long long>(seed),
                  i, t.name, s, text.size());
      ++failures;
    }
  }
  std::string cmd = "rm -rf '" + dir + "'";
  if (std::system(cmd.c_str()) != 0) std::printf("could not remove %s\n", dir.c_str());
  std::printf("%d fixed cases and %d mutants (seed %llu): %d parsed, %d refused with ditgen::Error, %d failures; slowest %.3f s of CPU (%s)\n",
              n_fixed, count, static_cast<unsigned long long>(seed), parsed, refused, failures, slowest, slowest_what.c_str());
  return failures == 0 && seeds_parsed ? 0 : 1;
}

// The probe's reproducers (issue 22), as files for the CLI tests.
int write_reproducers(const std::string& dir) {
  ::mkdir(dir.c_str(), 0755);
  // A header nested 70,000 deep (crashed verify, --model-path loading and trace-diff).
  write_file(dir + "/deep.safetensors", safetensors_bytes("{\"a\":" + nested(70000, '[', ']') + "}", 0));
  // 100,000 zero-size entries (took 144 s).
  write_file(dir + "/wide.safetensors", safetensors_bytes(wide_header(100000), 0));
  // Presets nested 200,000 deep (crashed the model command).
  write_file(dir + "/deep_presets.json", "{\"defaults\":" + nested_objects(200000) + "}");
  // A JSON config nested 70,000 deep.
  write_file(dir + "/deep_config.json", nested(70000, '[', ']'));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 2 && args[0] == "write") return write_reproducers(args[1]);
  if (!args.empty() && args[0] == "run") {
    uint64_t seed = 22;
    int count = 400;
    for (size_t i = 1; i + 1 < args.size(); i += 2) {
      if (args[i] == "--seed") seed = std::stoull(args[i + 1]);
      if (args[i] == "--count") count = std::stoi(args[i + 1]);
    }
    return run(seed, count);
  }
  std::fprintf(stderr, "usage: ditgen_fuzz run [--seed N] [--count N] | ditgen_fuzz write DIR\n");
  return 2;
}
