// Issue 22: hostile inputs. Strict JSON everywhere (depth, repeated keys, out-of-range numbers), the one
// validation of settings shared by flags, prompt-file items and presets, tensors whose dtype cannot hold
// what the model reads, every output of a launch checked after path normalisation, and the leftovers of
// export-tiny --replace through a symlink.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "lib/io/json.h"
#include "lib/io/output_files.h"
#include "lib/io/safetensors.h"
#include "lib/pipeline/model.h"
#include "lib/pipeline/output.h"
#include "lib/pipeline/prompt_file.h"
#include "lib/pipeline/settings_check.h"
#include "lib/runtime/error.h"
#include "lib/sched/flow_match.h"
#include "models/llm/decoder.h"

using namespace ditgen;
namespace fs = std::filesystem;

namespace {

// A fresh folder under /tmp, removed when the test ends.
struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/ditgen_rel_XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string nested_arrays(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::string safetensors_bytes(const std::string& header, size_t data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + std::string(data, '\0');
}

}  // namespace

// ---- strict JSON ------------------------------------------------------------------------------

TEST_CASE("parse_json: nesting up to 64 levels parses, deeper is refused naming the source", "[reliability]") {
  CHECK(io::parse_json(nested_arrays(64), "x.json").is_array());
  CHECK_THAT(error_of([] { io::parse_json(nested_arrays(65), "'cfg.json'"); }),
             Catch::Contains("'cfg.json' nests deeper than 64 levels"));
  // The probe's 70,000 levels: refused, not a stack overflow.
  CHECK_THAT(error_of([] { io::parse_json(nested_arrays(70000), "'cfg.json'"); }),
             Catch::Contains("deeper than 64"));
  std::string objects;
  for (int i = 0; i < 200000; ++i) objects += "{\"a\":";
  objects += "1" + std::string(200000, '}');
  CHECK_THAT(error_of([&] { io::parse_json(objects, "'p.json'"); }),
             Catch::Contains("'p.json' nests deeper than 64 levels (at 'a.a.a"));
}

TEST_CASE("parse_json: a key given twice in any object is refused with its place", "[reliability]") {
  CHECK_THAT(error_of([] { io::parse_json(R"({"a":1,"b":2,"a":3})", "'m.json'"); }),
             Catch::Contains("'m.json': key 'a' appears twice in the top-level object"));
  CHECK_THAT(error_of([] { io::parse_json(R"({"weight_map":{"k":"x","k":"y"}})", "'i.json'"); }),
             Catch::Contains("key 'k' appears twice in 'weight_map'"));
  CHECK_THAT(error_of([] { io::parse_json(R"({"l":[{"t":1},{"t":1,"t":2}]})", "'c.json'"); }),
             Catch::Contains("key 't' appears twice in 'l[1]'"));
  // The same key in different objects is fine.
  CHECK(io::parse_json(R"({"a":{"k":1},"b":{"k":2}})", "x").size() == 2);
}

TEST_CASE("parse_json: numbers beyond a double and bad syntax are refused", "[reliability]") {
  CHECK_THAT(error_of([] { io::parse_json(R"({"shift":1e400})", "'s.json'"); }),
             Catch::Contains("'s.json' is not valid JSON") && Catch::Contains("1e400"));
  CHECK_THAT(error_of([] { io::parse_json("{\"a\":", "'s.json'"); }), Catch::Contains("'s.json' is not valid JSON"));
  CHECK_THAT(error_of([] { io::parse_json("{\"a\":\"\xff\"}", "'s.json'"); }), Catch::Contains("not valid JSON"));
}

TEST_CASE("read_json_file: a FIFO or an over-large file is refused naming it", "[reliability]") {
  TempDir d;
  const std::string fifo = d / "fifo.json";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THAT(error_of([&] { io::read_json_file(fifo); }), Catch::Contains("fifo.json' is not a regular file"));
  CHECK_THAT(error_of([&] { io::read_text_file(d / "none.json", 10); }), Catch::Contains("none.json"));
  write_file(d / "big.json", std::string(100, ' ') + "{}");
  CHECK_THAT(error_of([&] { io::read_text_file(d / "big.json", 64, "'big.json'"); }),
             Catch::Contains("'big.json' has 102 bytes, more than the 64"));
}

TEST_CASE("json_get: integers must fit their type and numbers be finite", "[reliability]") {
  const auto j = nlohmann::json::parse(R"({"n": 4294967296, "f": 2.5})");
  CHECK_THAT(error_of([&] { io::json_get<int>(j, "n", 0, "c.json"); }), Catch::Contains("key 'n' is out of range"));
  CHECK(io::json_get<int64_t>(j, "n", 0, "c.json") == 4294967296LL);
  nlohmann::json inf = {{"x", std::numeric_limits<double>::infinity()}};
  CHECK_THAT(error_of([&] { io::json_get<double>(inf, "x", 0.0, "c.json"); }),
             Catch::Contains("key 'x' must be a finite number"));
}

// ---- safetensors ------------------------------------------------------------------------------

TEST_CASE("safetensors: a header nested 70,000 deep is refused naming the file", "[reliability]") {
  TempDir d;
  const std::string path = d / "deep.safetensors";
  write_file(path, safetensors_bytes("{\"a\":" + nested_arrays(70000) + "}", 0));
  CHECK_THAT(error_of([&] { io::SafetensorsFile::open(path); }),
             Catch::Contains("deep.safetensors' is corrupt: its header nests deeper than 64 levels"));
}

TEST_CASE("safetensors: 100,000 zero-size entries open (the tiling is valid)", "[reliability]") {
  TempDir d;
  std::string h = "{";
  for (int i = 0; i < 100000; ++i)
    h += (i ? "," : "") + std::string("\"t") + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
  h += "}";
  write_file(d / "wide.safetensors", safetensors_bytes(h, 0));
  auto f = io::SafetensorsFile::open(d / "wide.safetensors");
  CHECK(f->names().size() == 100000);
}

TEST_CASE("safetensors: a float tensor relabelled as integers or bool is refused naming file and key",
          "[reliability]") {
  TempDir d;
  const std::string path = d / "w.safetensors";
  io::write_safetensors(path, {{"blocks.0.weight", at::ones({2, 2})}, {"ids", at::arange(4, at::kLong)}});
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto at = bytes.find("\"F32\"");
  REQUIRE(at != std::string::npos);
  bytes.replace(at, 5, "\"I32\"");  // same element size: the header stays consistent
  write_file(path, bytes);
  auto f = io::SafetensorsFile::open(path);
  CHECK_THAT(error_of([&] { f->read("blocks.0.weight", io::Slice::whole(), at::kFloat, at::kCPU); }),
             Catch::Contains("w.safetensors': tensor 'blocks.0.weight' is stored as I32, but ditgen reads "
                             "floating-point values there"));
  CHECK_THAT(error_of([&] { f->read("ids", io::Slice::whole(), at::kBFloat16, at::kCPU); }),
             Catch::Contains("tensor 'ids' is stored as I64"));
  // Integers read as integers and the stored dtype stay readable.
  CHECK(f->read("ids", io::Slice::whole(), at::kLong, at::kCPU).sum().item<int64_t>() == 6);
  CHECK(f->read("blocks.0.weight").scalar_type() == at::kInt);
}

// ---- one validation -------------------------------------------------------------------------------

TEST_CASE("settings: one rule per setting for flags and JSON alike", "[reliability]") {
  using pipeline::setting_fault;
  using pipeline::setting_rule;
  const auto& steps = setting_rule("steps");
  CHECK(setting_fault(steps, std::string("28")).empty());
  CHECK(setting_fault(steps, std::string("2.5")) == "must be an integer from 1 to 10000, got '2.5'");
  CHECK(setting_fault(steps, nlohmann::json(2.5)) == "must be an integer from 1 to 10000, got 2.5");
  CHECK(setting_fault(steps, nlohmann::json(2.0)) == "must be an integer from 1 to 10000, got 2.0");
  CHECK(setting_fault(steps, nlohmann::json(100000)) == "must be an integer from 1 to 10000, got 100000");
  CHECK(setting_fault(steps, nlohmann::json(true)) == "must be an integer from 1 to 10000, got true");
  CHECK(setting_fault(setting_rule("height"), nlohmann::json(16388)) ==
        "must be an integer from 1 to 16384, got 16388");
  const auto& guidance = setting_rule("guidance");
  CHECK(setting_fault(guidance, nlohmann::json(-1)) == "must be a finite number >= 0 and at most 10000, got -1");
  CHECK(setting_fault(guidance, std::string("nan")) == "must be a finite number >= 0 and at most 10000, got 'nan'");
  CHECK(setting_fault(guidance, std::string("1e400")).find("got '1e400'") != std::string::npos);
  CHECK(setting_fault(setting_rule("frame_rate"), nlohmann::json(0)).find("> 0") != std::string::npos);
  CHECK(setting_fault(setting_rule("seed"), nlohmann::json(-3)) ==
        "must be an integer from 0 to 18446744073709551615, got -3");
  CHECK(setting_fault(setting_rule("text_encoder_out_layers"), nlohmann::json::array()).find("non-empty list") !=
        std::string::npos);
  CHECK(setting_fault(setting_rule("prompt"), nlohmann::json(3)) == "must be a string, got 3");
}

TEST_CASE("settings: presets defaults obey the command line's rules, naming file and key", "[reliability]") {
  const std::string src = "'m/ditgen_presets.json' defaults";
  auto err = [&](const char* text) {
    return error_of([&] { pipeline::check_preset_defaults(nlohmann::json::parse(text), src); });
  };
  CHECK(err(R"({"steps": 28, "guidance": 3.5, "prompt": "x", "text_encoder_out_layers": [10, 20]})").empty());
  CHECK(err(R"({"steps": 2.5})") == src + ": \"steps\" must be an integer from 1 to 10000, got 2.5");
  CHECK(err(R"({"steps": 1000000000})") == src + ": \"steps\" must be an integer from 1 to 10000, got 1000000000");
  CHECK_THAT(err(R"({"guidance": -4})"), Catch::Contains("\"guidance\" must be a finite number >= 0"));
  CHECK_THAT(err(R"({"true_cfg_scale": -1})"), Catch::Contains("\"true_cfg_scale\" must be a finite number >= 0"));
  CHECK_THAT(err(R"({"height": "1024"})"), Catch::Contains("\"height\" must be an integer from 1 to 16384, got \"1024\""));
  CHECK_THAT(err(R"({"prompt": ["a"]})"), Catch::Contains("\"prompt\" must be a string"));
  CHECK_THAT(err(R"({"stepz": 4})"), Catch::Contains("unknown setting \"stepz\""));
  CHECK_THAT(err(R"([1])"), Catch::Contains("\"defaults\" must be an object"));
}

TEST_CASE("settings: the built-in presets pass the same rules", "[reliability]") {
  for (const char* file : {"configs/flux2.json", "configs/qwen_image.json", "configs/ltx2.json"}) {
    const std::string path = std::string(DITGEN_SOURCE_DIR) + "/" + file;
    const auto j = io::read_json_file(path);
    CHECK(error_of([&] { pipeline::check_preset_defaults(j["defaults"], path); }).empty());
    CHECK(error_of([&] { pipeline::check_preset_defaults(j["tiny"]["defaults"], path); }).empty());
  }
}

TEST_CASE("folder_defaults: the presets file is read strictly and checked", "[reliability]") {
  TempDir d;
  const std::string presets = d / pipeline::kPresetsFile;
  auto err = [&](const std::string& text) {
    write_file(presets, text);
    return error_of([&] { pipeline::folder_defaults(d.path, nlohmann::json::object()); });
  };
  CHECK(err(R"({"defaults": {"steps": 4}})").empty());
  CHECK_THAT(err(R"({"defaults": {"steps": 4, "steps": 5}})"), Catch::Contains("key 'steps' appears twice in 'defaults'"));
  CHECK_THAT(err(R"({"defaults": {"steps": "many"}})"),
             Catch::Contains("ditgen_presets.json' defaults: \"steps\" must be an integer"));
  CHECK_THAT(err(R"({"defaults": {}, "defualts": {}})"), Catch::Contains("unknown key \"defualts\""));
  std::string deep = "{\"defaults\":";
  for (int i = 0; i < 200000; ++i) deep += "{\"a\":";
  deep += "1" + std::string(200001, '}');
  CHECK_THAT(err(deep), Catch::Contains("nests deeper than 64 levels"));
}

TEST_CASE("check_settings: resolved settings outside the rules are refused naming the source", "[reliability]") {
  pipeline::Settings s;
  s.height = s.width = 64;
  s.steps = 4;
  s.max_sequence_length = 32;
  CHECK(error_of([&] { pipeline::check_settings(s, "the command line"); }).empty());
  s.guidance = std::nan("");
  CHECK_THAT(error_of([&] { pipeline::check_settings(s, "presets"); }),
             Catch::Contains("presets: guidance must be a finite number >= 0"));
  s.guidance = 1;
  s.steps = 100000;
  CHECK_THAT(error_of([&] { pipeline::check_settings(s, "--prompt-file p line 2"); }),
             Catch::Contains("--prompt-file p line 2: steps must be an integer from 1 to 10000, got 100000"));
}

TEST_CASE("out-of-memory texts are recognised, the CPU allocator's included", "[reliability]") {
  CHECK(pipeline::is_out_of_memory(
      "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes. Error code 12"));
  CHECK(pipeline::is_out_of_memory("CUDA out of memory. Tried to allocate 2.00 GiB"));
  CHECK(pipeline::is_out_of_memory("std::bad_alloc"));
  CHECK_FALSE(pipeline::is_out_of_memory("shape mismatch"));
  CHECK_THAT(pipeline::out_of_memory_message("denoising", "cpu", "DefaultCPUAllocator: can't allocate\nmore"),
             Catch::Equals("out of memory while denoising on cpu (DefaultCPUAllocator: can't allocate): reduce "
                           "--height/--width/--batch-count, or spread the model over more ranks (--tp, --ulysses, "
                           "--ring)"));
}

// ---- prompt files ---------------------------------------------------------------------------------

TEST_CASE("prompt file: items obey the command line's ranges", "[reliability]") {
  auto err = [](const std::string& text) { return error_of([&] { pipeline::parse_prompt_file("p.jsonl", text); }); };
  CHECK(err("{\"steps\": 10000, \"height\": 16384}\n").empty());
  CHECK(err("{\"steps\": 100000}\n") == "--prompt-file p.jsonl line 1: \"steps\" must be an integer from 1 to 10000, got 100000");
  CHECK(err("{\"prompt\": \"a\"}\n{\"height\": 16388}\n") ==
        "--prompt-file p.jsonl line 2: \"height\" must be an integer from 1 to 16384, got 16388");
  CHECK_THAT(err("{\"steps\": 2.5}\n"), Catch::Contains("got 2.5"));
  CHECK_THAT(err("{\"seed\": -3}\n"), Catch::Contains("line 1: \"seed\" must be an integer from 0 to"));
}

TEST_CASE("prompt file: items may carry an image (or several) and a strength", "[reliability]") {
  const auto items = pipeline::parse_prompt_file("p.jsonl",
                                                 "{\"image\": \"a.png\", \"strength\": 0.5}\n{\"image\": "
                                                 "[\"a.png\", \"b.jpg\"]}\n{\"prompt\": \"x\"}\n");
  REQUIRE(items.size() == 3);
  CHECK(items[0].images == std::vector<std::string>{"a.png"});
  CHECK(items[0].strength == 0.5);
  CHECK(items[1].images == std::vector<std::string>{"a.png", "b.jpg"});
  CHECK(items[1].strength < 0);  // the command line's
  CHECK(items[2].images.empty());
  auto err = [](const std::string& text) {
    return error_of([&] { pipeline::parse_prompt_file("p.jsonl", text); });
  };
  CHECK_THAT(err("{\"image\": 3}\n"),
             Catch::Contains("line 1: \"image\" must be a file path or a list of them, got 3"));
  CHECK_THAT(err("{\"image\": [\"a.png\", \"\"]}\n"), Catch::Contains("\"image\" must be a file path"));
  CHECK_THAT(err("{\"image\": []}\n"), Catch::Contains("\"image\" is an empty list"));
  CHECK_THAT(err("{\"strength\": 0}\n"), Catch::Contains("line 1: \"strength\" must be"));
  CHECK_THAT(err("{\"strength\": 1.5}\n"), Catch::Contains("\"strength\" must be"));
}

TEST_CASE("prompt file: a key given twice on a line is refused", "[reliability]") {
  CHECK_THAT(error_of([] { pipeline::parse_prompt_file("p.jsonl", "{\"seed\": 1, \"seed\": 2}\n"); }),
             Catch::Contains("--prompt-file p.jsonl line 1: key 'seed' appears twice"));
}

TEST_CASE("prompt file: a line that is not UTF-8 is refused naming file and line", "[reliability]") {
  CHECK(error_of([] { pipeline::parse_prompt_file("p.txt", "a fox\ncaf\xe9\n"); }) ==
        "--prompt-file p.txt line 2: not UTF-8 text (byte 0xe9 at column 4); save the file as UTF-8");
  CHECK_THAT(error_of([] { pipeline::parse_prompt_file("p.jsonl", "{\"prompt\": \"caf\xe9\"}\n"); }),
             Catch::Contains("--prompt-file p.jsonl line 1: not UTF-8"));
  CHECK(pipeline::parse_prompt_file("p.txt", "caf\xc3\xa9\n").at(0).prompt == std::string("caf\xc3\xa9"));
}

TEST_CASE("prompt file: the items come from the bytes the digest covers", "[reliability]") {
  TempDir d;
  const std::string path = d / "p.txt";
  write_file(path, "first\nsecond\n");
  const std::string bytes = pipeline::read_prompt_file_bytes(path);
  const std::string digest = pipeline::prompt_file_digest_of(bytes);
  write_file(path, "");  // changed after the ranks agreed on it
  const auto items = pipeline::parse_prompt_file(path, bytes);
  REQUIRE(items.size() == 2);
  CHECK(*items[1].prompt == "second");
  CHECK(pipeline::prompt_file_digest_of(bytes) == digest);
  CHECK(pipeline::prompt_file_digest_of("") != digest);
  const std::string fifo = d / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THAT(error_of([&] { pipeline::read_prompt_file_bytes(fifo); }), Catch::Contains("--prompt-file '"));
}

// ---- the outputs of a launch ----------------------------------------------------------------------

TEST_CASE("normalized_path resolves '.', '..', '//' and symlinked folders", "[reliability]") {
  TempDir d;
  const std::string real = fs::canonical(d.path).string();
  fs::create_directories(d / "o");
  fs::create_directory_symlink(d / "o", d / "link");
  CHECK(pipeline::normalized_path(d / "o/a.png") == real + "/o/a.png");
  CHECK(pipeline::normalized_path(d / "o/./a.png") == real + "/o/a.png");
  CHECK(pipeline::normalized_path(d.path + "/o//a.png") == real + "/o/a.png");
  CHECK(pipeline::normalized_path(d / "o/x/../a.png") == real + "/o/a.png");
  CHECK(pipeline::normalized_path(d / "link/a.png") == real + "/o/a.png");
  CHECK(pipeline::normalized_path(d / "new/deeper/../a.png") == real + "/new/a.png");
  // The last component stays as written: a rename replaces a symlink there.
  CHECK(pipeline::normalized_path(d / "link") == real + "/link");
}

TEST_CASE("check_launch_files: outputs that coincide after normalisation are refused", "[reliability]") {
  TempDir d;
  fs::create_directories(d / "o");
  fs::create_directory_symlink(d / "o", d / "link");
  using pipeline::LaunchFile;
  auto err = [](std::vector<LaunchFile> out, std::vector<LaunchFile> in = {}) {
    return error_of([&] { pipeline::check_launch_files(out, in); });
  };
  CHECK(err({{d / "o/a.png", "line 1"}, {d / "o/b.png", "line 2"}}).empty());
  CHECK_THAT(err({{d / "o/a.png", "line 1"}, {d / "o/./a.png", "line 2"}}),
             Catch::Contains("line 1 ('" + d / "o/a.png" + "') and line 2") && Catch::Contains("write the same file"));
  CHECK_THAT(err({{d / "o/a.png", "line 1"}, {d.path + "/o//a.png", "line 2"}}), Catch::Contains("same file"));
  CHECK_THAT(err({{d / "o/a.png", "line 1"}, {d / "link/a.png", "line 3"}}), Catch::Contains("line 3"));
  // An output that is an input of the launch (the report over the prompt file).
  write_file(d / "o/p.json", "{}\n");
  CHECK_THAT(err({{d / "o/p.json", "line 1 (its report)"}}, {{d / "link/p.json", "--prompt-file"}}),
             Catch::Contains("line 1 (its report)") && Catch::Contains("would overwrite --prompt-file"));
  // A hard link to the input, too.
  REQUIRE(::link((d / "o/p.json").c_str(), (d / "o/hard.json").c_str()) == 0);
  CHECK_THAT(err({{d / "o/hard.json", "line 2"}}, {{d / "o/p.json", "--prompt-file"}}),
             Catch::Contains("an input of this launch (the same file)"));
}

TEST_CASE("check_launch_files: names known only after the run are matched as patterns", "[reliability]") {
  TempDir d;
  fs::create_directories(d / "o");
  using pipeline::LaunchFile;
  auto err = [](std::vector<LaunchFile> out, std::vector<LaunchFile> in = {}) {
    return error_of([&] { pipeline::check_launch_files(out, in); });
  };
  const LaunchFile auto1{d / "o/flux2.64x64.C0_*.0001.png", "line 1", true};
  const LaunchFile auto2{d / "o/flux2.64x64.C0_*.0002.png", "line 2", true};
  const LaunchFile report1{d / "o/flux2.64x64.C0_*.0001.json", "line 1 (its report)", true};
  CHECK(err({auto1, auto2, report1}).empty());
  CHECK_THAT(err({auto1, {d / "o/flux2.64x64.C0_DBCache_F1B0_S3.0001.png", "line 4"}}),
             Catch::Contains("line 1") && Catch::Contains("line 4") && Catch::Contains("may write the same file"));
  CHECK(err({auto1, {d / "o/flux2.64x64.C0_DBCache_F1B0_S3.0003.png", "line 4"}}).empty());
  CHECK_THAT(err({auto1, auto1}), Catch::Contains("may write the same file"));
  // A '*' the user wrote is a plain character.
  CHECK(err({{d / "o/a*.png", "line 1"}, {d / "o/ab.png", "line 2"}}).empty());
}

TEST_CASE("planned_outputs names what output_paths names, with the report", "[reliability]") {
  TempDir d;
  const comm::Mesh mesh(comm::MeshShape{}, 1, 0);
  const auto files = pipeline::planned_outputs(d / "o/", "flux2", 64, 96, 0, pipeline::run_tag_pattern(mesh, false) + ".0001",
                                               2, "png", false, "line 1");
  REQUIRE(files.size() == 3);
  CHECK(files[0].path == d / "o/flux2.64x96.C0.0001_0.png");
  CHECK(files[2].path == d / "o/flux2.64x96.C0.0001.json");
  CHECK_FALSE(files[0].wildcard);
  const auto cached = pipeline::planned_outputs(d / "o/", "flux2", 64, 96, 0, pipeline::run_tag_pattern(mesh, true),
                                                1, "png", false, "line 1");
  CHECK(cached[0].wildcard);
  const auto named = pipeline::planned_outputs(d / "x.png", "flux2", 64, 96, 0, "C0_*", 1, "png", false, "line 1");
  CHECK_FALSE(named[0].wildcard);
  CHECK(named[1].path == d / "x.json");
  // An explicit output equal to another item's automatic name, and a report over the summary.
  std::vector<pipeline::LaunchFile> all = files;
  for (const auto& f : pipeline::planned_outputs(d / "o/flux2.64x96.C0.0001_1.png", "flux2", 64, 96, 0, "C0", 1,
                                                 "png", false, "line 2"))
    all.push_back(f);
  CHECK_THAT(error_of([&] { pipeline::check_launch_files(all, {}); }),
             Catch::Contains("line 1 ('") && Catch::Contains("and line 2"));
  const auto summary_clash =
      pipeline::planned_outputs(d / "o/p.summary.png", "flux2", 64, 96, 0, "C0", 1, "png", false, "line 3");
  CHECK_THAT(error_of([&] {
               auto outs = summary_clash;
               outs.push_back({d / "o/p.summary.json", "the prompt-file summary"});
               pipeline::check_launch_files(outs, {});
             }),
             Catch::Contains("line 3 (its report)") && Catch::Contains("the prompt-file summary"));
}

// ---- configs --------------------------------------------------------------------------------------

TEST_CASE("decoder config: model_type of another family and max_position_embeddings", "[reliability]") {
  const std::string base =
      R"("hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100)";
  auto err = [&](const std::string& extra, std::optional<llm::DecoderFamily> fam = std::nullopt) {
    return error_of([&] { llm::DecoderConfig::from_json(nlohmann::json::parse("{" + base + extra + "}"), "te/config.json", fam); });
  };
  CHECK(err(R"(,"model_type":"qwen2","max_position_embeddings":128)").empty());
  CHECK_THAT(err(R"(,"model_type":"gemma3_text")", llm::DecoderFamily::Qwen2),
             Catch::Contains("model_type says gemma3 but the caller expects a qwen2"));
  CHECK_THAT(err(R"(,"model_type":"qwen2_5_vl","text_config":{"model_type":"gemma3_text"})"),
             Catch::Contains("model_type says qwen2 but text_config.model_type says gemma3"));
  CHECK_THAT(err(R"(,"model_type":"bert")"), Catch::Contains("model_type 'bert' is not a supported text encoder"));
  CHECK_THAT(err(R"(,"max_position_embeddings":0)"), Catch::Contains("'max_position_embeddings' must be a positive"));
  const auto cfg = llm::DecoderConfig::from_json(nlohmann::json::parse("{" + base + R"(,"max_position_embeddings":1})"),
                                                 "te/config.json");
  CHECK(cfg.max_position_embeddings == 1);
  CHECK(cfg.source == "te/config.json");
}

TEST_CASE("scheduler config: token counts and training steps that make no sense are refused", "[reliability]") {
  auto err = [](const char* text) {
    return error_of([&] { sched::FlowMatchConfig::from_json(nlohmann::json::parse(text), "scheduler_config.json", {}); });
  };
  CHECK(err(R"({"base_image_seq_len":256,"max_image_seq_len":4096,"num_train_timesteps":1000})").empty());
  CHECK_THAT(err(R"({"base_image_seq_len":0})"), Catch::Contains("base_image_seq_len must be a positive token count, got 0"));
  CHECK_THAT(err(R"({"base_image_seq_len":256,"max_image_seq_len":256})"),
             Catch::Contains("max_image_seq_len (256) must be larger than base_image_seq_len (256)"));
  CHECK_THAT(err(R"({"num_train_timesteps":0})"), Catch::Contains("num_train_timesteps must be 1000"));
  CHECK_THAT(err(R"({"num_train_timesteps":1000.5})"), Catch::Contains("'num_train_timesteps' must be an integer"));
  CHECK_THAT(err(R"({"max_shift":1e5})"), Catch::Contains("max_shift must lie in [-100, 100]"));
}

// ---- export-tiny --replace through a symlink -----------------------------------------------------------

TEST_CASE("OutputFolder --replace through a symlink replaces the target and leaves nothing behind",
          "[reliability]") {
  TempDir d;
  fs::create_directories(d / "real");
  write_file(d / "real/old.txt", "old");
  fs::create_directory_symlink(d / "real", d / "link");
  {
    io::OutputFolder out(d / "link", true);
    write_file(out.path() + "/new.txt", "new");
    out.commit();
  }
  CHECK(fs::is_symlink(d / "link"));
  CHECK(fs::exists(d / "link/new.txt"));
  CHECK_FALSE(fs::exists(d / "real/old.txt"));
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(d.path)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{"link", "real"});
}
