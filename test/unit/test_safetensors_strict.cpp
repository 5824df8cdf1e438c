// Safetensors read as strictly as the format's own validation (the safetensors crate): one test per rule
// with a hand-made header, index entries that leave their folder, NaN/Inf weights, and a seeded fuzz test
// over mutants of a real fixture file.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <typeinfo>

#include "lib/io/checkpoint.h"
#include "lib/io/printable.h"
#include "lib/io/safetensors.h"
#include "lib/nn/weights.h"
#include "lib/runtime/error.h"
#include "test/unit/fixtures.h"

using namespace ditgen;

namespace {

std::string tmp_path(const std::string& name) {
  return "/tmp/ditgen_strict_" + std::to_string(getpid()) + "_" + name;
}

std::string raw_file(const std::string& header, size_t data_bytes, uint64_t header_len) {
  std::string out(8, '\0');
  std::memcpy(out.data(), &header_len, 8);
  return out + header + std::string(data_bytes, '\0');
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// Writes `header` and `data_bytes` zero bytes as `name` and returns the message that opening it throws
// ("" when it opens).
std::string open_error(const std::string& header, size_t data_bytes) {
  const std::string path = tmp_path("rule.safetensors");
  write_bytes(path, raw_file(header, data_bytes, header.size()));
  std::string msg;
  try {
    io::SafetensorsFile::open(path);
  } catch (const Error& e) {
    msg = e.what();
  }
  std::remove(path.c_str());
  return msg;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("printable escapes control characters, invalid UTF-8 and bidi overrides", "[safetensors]") {
  CHECK(io::printable("model.layers.0.weight") == "model.layers.0.weight");
  CHECK(io::printable("a\x1b[31mb\n\t\x7f") == "a\\x1b[31mb\\n\\t\\x7f");
  CHECK(io::printable(std::string("a\0b", 3)) == "a\\x00b");
  CHECK(io::printable("caf\xc3\xa9 \xe6\xa8\xa1") == "caf\xc3\xa9 \xe6\xa8\xa1");  // valid UTF-8 stays
  CHECK(io::printable("\xff\xc3") == "\\xff\\xc3");                                // invalid, cut short
  CHECK(io::printable("\xc0\xaf") == "\\xc0\\xaf");                                // overlong '/'
  CHECK(io::printable("\xed\xa0\x80") == "\\xed\\xa0\\x80");                       // surrogate
  CHECK(io::printable("\xc2\x9b") == "\\u009b");                                   // C1 CSI
  CHECK(io::printable("x\xe2\x80\xaey") == "x\\u202ey");                           // right-to-left override
}

TEST_CASE("safetensors: shapes must be non-negative integers", "[safetensors]") {
  auto header = [](const std::string& shape) {
    return R"({"a.weight":{"dtype":"F32","shape":[)" + shape + R"(],"data_offsets":[0,8]}})";
  };
  CHECK(open_error(header("2"), 8).empty());
  CHECK_THAT(open_error(header("2.5"), 8), Catch::Contains("'a.weight' has shape entry 2.5") &&
                                               Catch::Contains("non-negative integers") &&
                                               Catch::Contains("rule.safetensors"));
  CHECK_THAT(open_error(header("2.0"), 8), Catch::Contains("shape entry 2.0"));
  CHECK_THAT(open_error(header("2e0"), 8), Catch::Contains("shape entry 2.0"));
  CHECK_THAT(open_error(header("-1"), 8), Catch::Contains("shape entry -1"));
  CHECK_THAT(open_error(header("\"2\""), 8), Catch::Contains("shape entry \"2\""));
  CHECK_THAT(open_error(header("null"), 8), Catch::Contains("shape entry null"));
  CHECK_THAT(open_error(header("18446744073709551616"), 8), Catch::Contains("'a.weight' has shape entry"));
  CHECK_THAT(open_error(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
             Catch::Contains("has shape 2; shapes are arrays"));
}

TEST_CASE("safetensors: data_offsets must be two non-negative integers, begin <= end", "[safetensors]") {
  auto header = [](const std::string& off) {
    return R"({"a":{"dtype":"F32","shape":[2],"data_offsets":)" + off + "}}";
  };
  CHECK_THAT(open_error(header("[0.0,8.0]"), 8), Catch::Contains("'a' has data offset 0.0"));
  CHECK_THAT(open_error(header("[0,8.5]"), 8), Catch::Contains("data offset 8.5"));
  CHECK_THAT(open_error(header("[-8,0]"), 8), Catch::Contains("data offset -8"));
  CHECK_THAT(open_error(header("[0,8,8]"), 8), Catch::Contains("must be two integers"));
  CHECK_THAT(open_error(header("[8,0]"), 8), Catch::Contains("begins at byte 8 but ends at byte 0"));
  CHECK_THAT(open_error(R"({"a":{"dtype":"F32","shape":[2]}})", 8),
             Catch::Contains("'a' has no 'data_offsets'"));
  CHECK_THAT(open_error(R"({"a":[1,2]})", 8), Catch::Contains("entry 'a' is [1,2], not an object"));
}

TEST_CASE("safetensors: tensors must tile the data section (no overlap, hole or trailing bytes)",
          "[safetensors]") {
  const std::string a = R"("a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})";
  CHECK(open_error("{" + a + R"(,"b":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})", 32).empty());
  CHECK_THAT(open_error("{" + a + R"(,"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 24),
             Catch::Contains("tensor 'b' (bytes 8..24) overlaps tensor 'a' (bytes 0..16)"));
  CHECK_THAT(open_error("{" + a + R"(,"b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 16),
             Catch::Contains("overlaps"));
  CHECK_THAT(
      open_error("{" + a + R"(,"b":{"dtype":"F32","shape":[4],"data_offsets":[20,36]}})", 36),
      Catch::Contains("bytes 16..20 of the data section belong to no tensor") && Catch::Contains("'b'"));
  CHECK_THAT(open_error(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
             Catch::Contains("bytes 0..4 of the data section belong to no tensor"));
  CHECK_THAT(open_error("{" + a + "}", 20), Catch::Contains("4 trailing bytes"));
  CHECK_THAT(open_error("{}", 1), Catch::Contains("1 trailing bytes"));
  // Empty tensors take no bytes and may sit anywhere on the tiling, as in the crate.
  CHECK(open_error("{" + a + R"(,"e":{"dtype":"F32","shape":[0,3],"data_offsets":[16,16]}})", 16).empty());
  CHECK_THAT(open_error("{" + a + R"(,"e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}})", 16),
             Catch::Contains("'a'") && Catch::Contains("overlaps"));
}

TEST_CASE("safetensors: duplicate keys are refused at every level", "[safetensors]") {
  const std::string a = R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  CHECK_THAT(open_error("{" + a + "," + a + "}", 4), Catch::Contains("tensor 'a' is listed twice"));
  CHECK_THAT(open_error(R"({"a":{"dtype":"F32","shape":[1],"shape":[1],"data_offsets":[0,4]}})", 4),
             Catch::Contains("entry 'a' has key 'shape' twice"));
  CHECK_THAT(open_error(R"({"__metadata__":{"k":"1","k":"2"}})", 0), Catch::Contains("has key 'k' twice"));
}

TEST_CASE("safetensors: element count x dtype size is computed without overflow", "[safetensors]") {
  // 2^32 * 2^32 wraps to 0 in 64 bits, which would match the empty span [0, 0].
  CHECK_THAT(open_error(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0),
             Catch::Contains("'a'") && Catch::Contains("more bytes than 64 bits can count"));
  // 2^62 elements x 4 bytes wraps to 0 as well.
  CHECK_THAT(open_error(R"({"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0),
             Catch::Contains("more bytes than 64 bits can count"));
  // An overflow before a zero dimension is still refused, as the crate's checked product does.
  CHECK_THAT(
      open_error(R"({"a":{"dtype":"U8","shape":[4294967296,4294967296,16,0],"data_offsets":[0,0]}})", 0),
      Catch::Contains("64 bits"));
  CHECK_THAT(open_error(R"({"a":{"dtype":"U8","shape":[9223372036854775808,0],"data_offsets":[0,0]}})", 0),
             Catch::Contains("too large"));
  CHECK_THAT(open_error(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
             Catch::Contains("tensor 'a' (F32 [3]) needs 12 bytes but its offsets span 8"));
}

TEST_CASE("safetensors: dtypes are the format's strings; unreadable ones are named on read",
          "[safetensors]") {
  CHECK_THAT(open_error(R"({"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})", 4),
             Catch::Contains("tensor 'a' has dtype 'F33', which the safetensors format does not define"));
  CHECK_THAT(open_error(R"({"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", 4),
             Catch::Contains("dtype 'f32'"));
  CHECK_THAT(open_error(R"({"a":{"dtype":32,"shape":[1],"data_offsets":[0,4]}})", 4),
             Catch::Contains("has dtype 32; dtypes are strings"));
  CHECK_THAT(open_error(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2),
             Catch::Contains("does not fill whole bytes"));
  // A dtype the format defines but ditgen does not read: the file opens, the read names file and tensor.
  const std::string path = tmp_path("u16.safetensors");
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("odd.u":{"dtype":"U16","shape":[2],"data_offsets":[4,8]}})";
  write_bytes(path, raw_file(header, 8, header.size()));
  auto f = io::SafetensorsFile::open(path);
  CHECK(f->read("a").numel() == 1);
  CHECK_THROWS_WITH(f->read("odd.u"), Catch::Contains("u16.safetensors") && Catch::Contains("'odd.u'") &&
                                          Catch::Contains("dtype U16, which ditgen cannot read"));
  CHECK_THROWS_WITH(f->read("odd.u", io::Slice::whole(), at::kFloat, at::kCPU), Catch::Contains("'odd.u'"));
  std::remove(path.c_str());
}

TEST_CASE("safetensors: __metadata__ must be an object of strings", "[safetensors]") {
  const std::string path = tmp_path("meta.safetensors");
  const std::string header = R"({"__metadata__":{"format":"pt","note":"x"}})";
  write_bytes(path, raw_file(header, 0, header.size()));
  CHECK(io::SafetensorsFile::open(path)->metadata().at("format") == "pt");
  std::remove(path.c_str());
  CHECK_THAT(open_error(R"({"__metadata__":{"format":1}})", 0),
             Catch::Contains("__metadata__ entry 'format' is 1, not a string"));
  CHECK_THAT(open_error(R"({"__metadata__":["pt"]})", 0),
             Catch::Contains("__metadata__ is [\"pt\"], not an object"));
  CHECK_THAT(open_error(R"({"__metadata__":"pt"})", 0), Catch::Contains("not an object of strings"));
}

TEST_CASE("safetensors: the header length is bounded by the file and by 100 MB", "[safetensors]") {
  const std::string path = tmp_path("len.safetensors");
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  write_bytes(path, raw_file(header, 4, header.size() + 5));
  CHECK_THROWS_WITH(io::SafetensorsFile::open(path),
                    Catch::Contains("is truncated or corrupt: header length"));
  write_bytes(path, raw_file(header, 4, 200'000'000));
  CHECK_THROWS_WITH(io::SafetensorsFile::open(path), Catch::Contains("over the format's limit"));
  write_bytes(path, raw_file(header, 4, ~0ull));
  CHECK_THROWS_WITH(io::SafetensorsFile::open(path), Catch::Contains("over the format's limit"));
  write_bytes(path, raw_file(" " + header, 4, header.size() + 1));
  CHECK_THROWS_WITH(io::SafetensorsFile::open(path), Catch::Contains("does not start with '{'"));
  write_bytes(path, raw_file(header + "   ", 4, header.size() + 3));  // trailing spaces pad, as writers do
  CHECK(io::SafetensorsFile::open(path)->has("a"));
  write_bytes(path, raw_file(header.substr(0, 20) + "\xff\xfe" + header.substr(20), 4, header.size() + 2));
  CHECK_THROWS_WITH(io::SafetensorsFile::open(path), Catch::Contains("not valid JSON"));
  std::remove(path.c_str());
}

TEST_CASE("safetensors: only regular files are opened (FIFO, folder, device refused at once)",
          "[safetensors]") {
  const std::string fifo = tmp_path("fifo.safetensors");
  REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(io::SafetensorsFile::open(fifo),
                    Catch::Contains("is a FIFO (named pipe), not a safetensors file"));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  std::remove(fifo.c_str());
  const std::string dir = tmp_path("dir.safetensors");
  REQUIRE(mkdir(dir.c_str(), 0700) == 0);
  CHECK_THROWS_WITH(io::SafetensorsFile::open(dir), Catch::Contains("is a directory"));
  rmdir(dir.c_str());
  CHECK_THROWS_WITH(io::SafetensorsFile::open("/dev/null"), Catch::Contains("is a character device"));
  CHECK_THROWS_WITH(io::SafetensorsFile::open(tmp_path("missing.safetensors")),
                    Catch::Contains("cannot open") && Catch::Contains("No such file"));
}

TEST_CASE("safetensors: control characters in names come out escaped in every message", "[safetensors]") {
  const std::string evil = "a\x1b[2J\x1b]0;pwned\x07.weight";
  const std::string escaped = "a\\x1b[2J\\x1b]0;pwned\\x07.weight";
  const std::string evil_json = "a\\u001b[2J\\u001b]0;pwned\\u0007.weight";
  auto clean = [](const std::string& msg) {
    for (unsigned char c : msg)
      if (c < 0x20 || c == 0x7f) return false;
    return true;
  };
  std::string msg =
      open_error(R"({")" + evil_json + R"(":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})", 8);
  CHECK_THAT(msg, Catch::Contains("'" + escaped + "' has shape entry 2.5"));
  CHECK(clean(msg));
  msg = open_error(R"({")" + evil_json + R"(":1,")" + evil_json + R"(":2})", 0);
  CHECK_THAT(msg, Catch::Contains(escaped));
  CHECK(clean(msg));
  // Declared-weights errors through the store quote the key escaped too.
  const std::string path = tmp_path("evil.safetensors");
  io::write_safetensors(path, {{evil, at::zeros({2})}});
  auto src = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({path}));
  nn::Weights w(src, at::kFloat, at::kCPU);
  try {
    w.get(evil, {3});
    FAIL("a mis-shaped tensor loaded");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains(escaped));
    CHECK(clean(e.what()));
  }
  std::remove(path.c_str());
}

TEST_CASE("index entries must name files inside the component folder", "[safetensors]") {
  const std::string root = tmp_path("index");
  const std::string dir = root + "/transformer";
  REQUIRE(mkdir(root.c_str(), 0700) == 0);
  REQUIRE(mkdir(dir.c_str(), 0700) == 0);
  io::write_safetensors(dir + "/m-1.safetensors", {{"a", at::ones({2})}});
  io::write_safetensors(root + "/outside.safetensors", {{"b", at::ones({2})}});
  const std::string index = dir + "/m.safetensors.index.json";
  auto open_with = [&](const std::string& weight_map) {
    std::ofstream(index, std::ios::trunc) << R"({"metadata":{},"weight_map":)" << weight_map << "}";
    std::string msg;
    try {
      io::TensorStore::open_dir(dir);
    } catch (const Error& e) {
      msg = e.what();
    }
    return msg;
  };
  CHECK(open_with(R"({"a":"m-1.safetensors"})").empty());
  CHECK(open_with(R"({"a":"./m-1.safetensors"})").empty());
  CHECK_THAT(open_with(R"({"a":"m-1.safetensors","b":"../outside.safetensors"})"),
             Catch::Contains("m.safetensors.index.json': weight_map['b'] = '../outside.safetensors'") &&
                 Catch::Contains("leaves the folder through '..'"));
  CHECK_THAT(open_with(R"({"b":"sub/../../outside.safetensors"})"), Catch::Contains("'..'"));
  CHECK_THAT(open_with(R"({"b":")" + root + R"(/outside.safetensors"})"),
             Catch::Contains("weight_map['b']") && Catch::Contains("is an absolute path"));
  REQUIRE(symlink((root + "/outside.safetensors").c_str(), (dir + "/link.safetensors").c_str()) == 0);
  CHECK_THAT(
      open_with(R"({"b":"link.safetensors"})"),
      Catch::Contains("weight_map['b'] = 'link.safetensors'") && Catch::Contains("outside the folder"));
  CHECK_THAT(open_with(R"({"a":3})"), Catch::Contains("weight_map['a'] is 3, not a file name"));
  CHECK_THAT(open_with(R"({"a":""})"), Catch::Contains("is not a file name"));
  CHECK_THAT(open_with(R"({"a":"m-1.safetensors\u0000.x"})"), Catch::Contains("is not a file name"));
  CHECK_THAT(open_with(R"({"a":"nope.safetensors"})"), Catch::Contains("which does not exist"));
  CHECK_THAT(open_with(R"(["a"])"), Catch::Contains("has no 'weight_map' object"));
  CHECK_THAT(open_with(R"({"a\u001b[2J":"x/../../y"})"), Catch::Contains("weight_map['a\\x1b[2J']"));
  std::remove((dir + "/link.safetensors").c_str());
  std::remove(index.c_str());
  std::remove((dir + "/m-1.safetensors").c_str());
  std::remove((root + "/outside.safetensors").c_str());
  rmdir(dir.c_str());
  rmdir(root.c_str());
}

TEST_CASE("NaN and Inf weights are refused with the tensor, the file and the count", "[safetensors]") {
  const std::string path = tmp_path("nan.safetensors");
  at::Tensor bad = at::ones({4, 3});
  bad[2][1] = NAN;  // both in rank 1's rows of a 2-way row split
  bad[3][0] = NAN;
  at::Tensor inf = at::zeros({5});
  inf[4] = -INFINITY;
  at::Tensor big = at::full({2}, 1e6);  // finite in F32, Inf as fp16
  io::write_safetensors(
      path, {{"blk.nan.weight", bad}, {"blk.inf.bias", inf}, {"big", big}, {"ok", at::ones({2})}});
  auto src = std::make_shared<nn::CheckpointSource>(io::TensorStore::open_files({path}));
  nn::Weights w(src, at::kFloat, at::kCPU);
  CHECK_THROWS_WITH(w.get("blk.nan.weight", {4, 3}), Catch::Contains("tensor 'blk.nan.weight'") &&
                                                         Catch::Contains("nan.safetensors") &&
                                                         Catch::Contains("2 NaN and 0 Inf of 12 values"));
  CHECK_THROWS_WITH(w.get("blk.inf.bias", {5}), Catch::Contains("tensor 'blk.inf.bias'") &&
                                                    Catch::Contains("0 NaN and 1 Inf of 5 values"));
  CHECK_THROWS_WITH(w.with_tp({1, 2}).get("blk.nan.weight", {4, 3}, nn::Shard::rows()),
                    Catch::Contains("2 NaN and 0 Inf of 6 values in this rank's slice"));
  CHECK(w.with_tp({0, 2}).get("blk.nan.weight", {4, 3}, nn::Shard::rows()).sizes() ==
        at::IntArrayRef({2, 3}));
  CHECK(w.get("big", {2}).sum().item<float>() == 2e6f);
  nn::Weights half(src, at::kHalf, at::kCPU);
  CHECK_THROWS_WITH(half.get("big", {2}), Catch::Contains("'big'") &&
                                              Catch::Contains("F32 values too large for Half") &&
                                              Catch::Contains("2 of 2 become Inf"));
  CHECK(half.get("ok", {2}).sum().item<float>() == 2.0f);
  std::remove(path.c_str());
}

// ---- fuzz -------------------------------------------------------------------------------------------

namespace {

enum class Expect { Refuse, Identical, Any };

// A mutant file: `head`, then bytes [tail_begin, tail_end) of the original (its data section, or a
// prefix for truncations), so that hundreds of mutants do not each hold a copy of the weights.
struct Mutant {
  std::string kind;
  std::string head;
  uint64_t tail_begin = 0, tail_end = 0;
  Expect expect = Expect::Any;
};

struct Original {
  std::string bytes;
  uint64_t header_len = 0;
  nlohmann::ordered_json header;
  std::map<std::string, io::TensorInfo> infos;
  const char* data() const { return bytes.data() + 8 + header_len; }
};

void set_header_len(std::string& bytes, uint64_t n) { std::memcpy(bytes.data(), &n, 8); }

// The first 8 + header_len bytes of a file with `header`.
std::string head_for(const std::string& header) {
  std::string out(8, '\0');
  set_header_len(out, header.size());
  return out + header;
}

// The header rebuilt from its entries, with the entry texts given (to duplicate, reorder, respace).
std::string join_entries(const std::vector<std::string>& entries, const std::string& sep = ",") {
  std::string h = "{";
  for (size_t i = 0; i < entries.size(); ++i) h += (i ? sep : "") + entries[i];
  return h + "}";
}

std::vector<std::string> entry_texts(const nlohmann::ordered_json& header, int indent = -1) {
  std::vector<std::string> out;
  for (auto it = header.begin(); it != header.end(); ++it)
    out.push_back(nlohmann::json(it.key()).dump() + ":" + it.value().dump(indent));
  return out;
}

std::vector<Mutant> make_mutants(const Original& o, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto pick = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
  const uint64_t hl = o.header_len, size = o.bytes.size();
  const std::vector<std::string> names = [&] {
    std::vector<std::string> n;
    for (const auto& kv : o.infos) n.push_back(kv.first);
    return n;
  }();
  std::vector<Mutant> out;
  // A mutant of the first 8 + header_len bytes, followed by the original data section.
  auto add = [&](const std::string& kind, const std::string& head, Expect expect) {
    out.push_back({kind, head, 8 + hl, size, expect});
  };
  const std::string head = o.bytes.substr(0, 8 + hl);

  // Raw bytes of the header: flips, insertions and deletions, with the length field kept or updated.
  for (int i = 0; i < 120; ++i) {
    std::string b = head;
    b[8 + pick(hl)] ^= static_cast<char>(1u << pick(8));
    add("bit flip", b, Expect::Any);
  }
  for (int i = 0; i < 60; ++i) {
    std::string b = head;
    const uint64_t at = 8 + pick(hl);
    const bool fix_len = i % 2 == 0;
    if (i % 4 < 2) {
      b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), static_cast<char>(pick(256)));
      if (fix_len) set_header_len(b, hl + 1);
    } else {
      b.erase(at, 1);
      if (fix_len) set_header_len(b, hl - 1);
    }
    // With the length kept, the data section shifts by one byte: always refused (tiling).
    add(fix_len ? "insert/delete" : "insert/delete, length kept", b, fix_len ? Expect::Any : Expect::Refuse);
  }
  // Truncations anywhere, and header-length fields that disagree with the header.
  for (int i = 0; i < 40; ++i) out.push_back({"truncation", "", 0, pick(size), Expect::Refuse});
  const uint64_t lens[] = {0,        1,        2,           hl - 1, hl - 3,     hl + 1,           hl + 8,
                           size - 8, size - 7, 100'000'001, ~0ull,  1ull << 63, hl + (1ull << 32)};
  for (uint64_t len : lens) {
    std::string b = head;
    set_header_len(b, len);
    add("header length", b, Expect::Refuse);
  }
  for (int i = 0; i < 10; ++i) {
    std::string b = head;
    const uint64_t len = pick(size);
    if (len == hl) continue;
    set_header_len(b, len);
    add("header length", b, Expect::Refuse);
  }

  // Edits of the JSON that the format forbids.
  const auto entries = entry_texts(o.header);
  for (int i = 0; i < 15; ++i) {
    auto e = entries;
    const size_t k = pick(e.size());
    e.insert(e.begin() + static_cast<std::ptrdiff_t>(pick(e.size() + 1)), e[k]);
    add("duplicate entry", head_for(join_entries(e)), Expect::Refuse);
  }
  const std::vector<std::string> bad_dims = {"+1", "-1", "*2", "float", "neg", "string", "huge", "exp"};
  for (int i = 0; i < 40; ++i) {
    nlohmann::ordered_json h = o.header;
    auto& shape = h[names[pick(names.size())]]["shape"];
    const size_t d = pick(shape.size());
    const uint64_t v = shape[d].get<uint64_t>();
    const std::string how = bad_dims[static_cast<size_t>(i) % bad_dims.size()];
    if (how == "+1")
      shape[d] = v + 1;
    else if (how == "-1")
      shape[d] = v - 1;
    else if (how == "*2")
      shape[d] = v * 2;
    else if (how == "float")
      shape[d] = static_cast<double>(v);
    else if (how == "neg")
      shape[d] = -static_cast<int64_t>(v);
    else if (how == "string")
      shape[d] = std::to_string(v);
    else if (how == "huge")
      shape[d] = ~0ull;
    else
      shape[d] = static_cast<double>(v) + 0.5;
    add("shape " + how, head_for(h.dump()), Expect::Refuse);
  }
  for (int i = 0; i < 20; ++i) {
    nlohmann::ordered_json h = o.header;
    const auto &a = names[pick(names.size())], &b = names[pick(names.size())];
    const auto &ia = o.infos.at(a), &ib = o.infos.at(b);
    if (ia.end - ia.begin == ib.end - ib.begin) continue;  // equal spans swap undetectably, as data edits do
    std::swap(h[a]["data_offsets"], h[b]["data_offsets"]);
    add("swap offsets", head_for(h.dump()), Expect::Refuse);
  }
  for (int i = 0; i < 10; ++i) {
    nlohmann::ordered_json h = o.header;
    h.erase(names[pick(names.size())]);
    add("drop entry (hole)", head_for(h.dump()), Expect::Refuse);
  }
  for (int i = 0; i < 20; ++i) {
    nlohmann::ordered_json h = o.header;
    auto& e = h[names[pick(names.size())]];
    const uint64_t b = e["data_offsets"][0], en = e["data_offsets"][1];
    switch (i % 5) {
      case 0:
        e["data_offsets"] = {static_cast<double>(b), static_cast<double>(en)};
        break;
      case 1:
        e["data_offsets"] = {en, b};
        break;
      case 2:
        e["data_offsets"] = {b, en, en};
        break;
      case 3:
        e["dtype"] = "F33";
        break;
      default:
        h["__metadata__"] = {{"format", 1}};
        break;
    }
    add("bad field", head_for(h.dump()), Expect::Refuse);
  }

  // Edits that keep the header's meaning: spacing, entry order, string metadata, padding.
  for (int i = 0; i < 30; ++i) {
    auto e = entry_texts(o.header, i % 3 == 0 ? 2 : -1);
    std::shuffle(e.begin(), e.end(), rng);
    if (i % 2)
      e.insert(e.begin() + static_cast<std::ptrdiff_t>(pick(e.size())), R"("__metadata__":{"format":"pt"})");
    const std::string seps[] = {",", " , ", ",\n  ", "\t,\r\n"};
    add("same meaning", head_for(join_entries(e, seps[i % 4]) + std::string(pick(16), ' ')),
        Expect::Identical);
  }
  return out;
}

enum class Outcome { Refused, Identical, Reinterpreted };

// Opens and reads every tensor of `bytes`. Refused: ditgen::Error. Otherwise every tensor's raw bytes
// must equal the original data section at the same offsets; Identical when every entry (name, dtype,
// shape, offsets) equals the original's, Reinterpreted when a name or same-sized dtype changed.
Outcome load_mutant(const Mutant& m, const Original& o, const std::string& path) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(m.head.data(), static_cast<std::streamsize>(m.head.size()));
    out.write(o.bytes.data() + m.tail_begin, static_cast<std::streamsize>(m.tail_end - m.tail_begin));
    REQUIRE(out.good());
  }
  std::shared_ptr<io::SafetensorsFile> f;
  std::map<std::string, at::Tensor> read;
  try {
    f = io::SafetensorsFile::open(path);
    for (const auto& n : f->names()) read[n] = f->read(n);
  } catch (const Error&) {
    return Outcome::Refused;
  } catch (const std::exception& e) {
    FAIL("mutant '" << m.kind << "' threw a " << typeid(e).name()
                    << " instead of ditgen::Error: " << e.what());
  }
  bool identical = read.size() == o.infos.size();
  for (const auto& [name, t] : read) {
    const io::TensorInfo& info = f->info(name);
    INFO("mutant '" << m.kind << "', tensor '" << io::printable(name) << "'");
    REQUIRE(static_cast<uint64_t>(t.numel() * t.element_size()) == info.end - info.begin);
    REQUIRE(std::memcmp(t.data_ptr(), o.data() + info.begin, info.end - info.begin) == 0);
    auto it = o.infos.find(name);
    identical = identical && it != o.infos.end() && it->second.dtype == info.dtype &&
                it->second.shape == info.shape && it->second.begin == info.begin &&
                it->second.end == info.end;
  }
  return identical ? Outcome::Identical : Outcome::Reinterpreted;
}

}  // namespace

TEST_CASE("safetensors fuzz: mutants of a real file are refused cleanly or load identically",
          "[safetensors]") {
  // Only the header is mutated: the data section has no checksum in the format, so a changed weight byte
  // is undetectable by design. For the same reason a header edit that renames a tensor or swaps a dtype of
  // the same size (F32 <-> I32) is a valid file; such mutants must still read exactly the original bytes.
  const std::string src = fixture_dir("models/qwenimage_vae_b1_6x8") + "/weights.safetensors";
  Original o;
  o.bytes = slurp(src);
  REQUIRE(o.bytes.size() > 8);
  std::memcpy(&o.header_len, o.bytes.data(), 8);
  o.header = nlohmann::ordered_json::parse(o.bytes.substr(8, o.header_len));
  auto orig = io::SafetensorsFile::open(src);
  for (const auto& n : orig->names()) o.infos[n] = orig->info(n);

  const auto mutants = make_mutants(o, 0x5afe7e25);
  const std::string path = tmp_path("fuzz.safetensors");
  struct Remove {
    std::string path;
    ~Remove() { std::remove(path.c_str()); }
  } remove_at_exit{path};  // also when a REQUIRE fails
  std::map<std::string, std::map<Outcome, int>> tally;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& m : mutants) {
    const Outcome r = load_mutant(m, o, path);
    INFO("mutant kind '" << m.kind << "'");
    if (m.expect == Expect::Refuse) CHECK(r == Outcome::Refused);
    if (m.expect == Expect::Identical) CHECK(r == Outcome::Identical);
    ++tally[m.kind][r];
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int refused = 0, identical = 0, reinterpreted = 0;
  for (const auto& [kind, counts] : tally) {
    auto get = [&](Outcome r) { return counts.count(r) ? counts.at(r) : 0; };
    refused += get(Outcome::Refused);
    identical += get(Outcome::Identical);
    reinterpreted += get(Outcome::Reinterpreted);
  }
  WARN(mutants.size() << " mutants in " << seconds << " s: " << refused << " refused, " << identical
                      << " identical, " << reinterpreted
                      << " valid with a renamed tensor or same-size dtype");
  CHECK(mutants.size() >= 300);
  CHECK(identical >= 30);
  CHECK(refused >= 250);
}
