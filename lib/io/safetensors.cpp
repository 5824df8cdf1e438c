#include "lib/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <tuple>

#include "lib/io/json.h"
#include "lib/io/printable.h"
#include "lib/runtime/error.h"

namespace ditgen::io {

namespace {

// The safetensors crate's MAX_HEADER_SIZE; real checkpoints have headers well under 10 MB.
constexpr uint64_t kMaxHeader = 100'000'000;

struct DtypeBits {
  const char* name;
  uint64_t bits;
};
// Every dtype the format defines (the safetensors crate's `Dtype`) and its element size in bits; F4
// and F6 pack several elements per byte.
constexpr DtypeBits kDtypes[] = {{"BOOL", 8}, {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
                                 {"I8", 8},   {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"I16", 16},
                                 {"U16", 16}, {"F16", 16},    {"BF16", 16},   {"I32", 32},    {"U32", 32},
                                 {"F32", 32}, {"C64", 64},    {"F64", 64},    {"I64", 64},    {"U64", 64}};

// Bits of one element, 0 for a string the format does not define.
uint64_t dtype_bits(const std::string& d) {
  for (const auto& e : kDtypes)
    if (d == e.name) return e.bits;
  return 0;
}

// The ATen type a dtype is read into, if ditgen can read it (F8_E4M3 is upcast to float).
std::optional<at::ScalarType> readable_as(const std::string& d) {
  if (d == "F64") return at::kDouble;
  if (d == "F32") return at::kFloat;
  if (d == "F16") return at::kHalf;
  if (d == "BF16") return at::kBFloat16;
  if (d == "F8_E4M3") return at::kFloat;
  if (d == "I64") return at::kLong;
  if (d == "I32") return at::kInt;
  if (d == "I16") return at::kShort;
  if (d == "I8") return at::kChar;
  if (d == "U8") return at::kByte;
  if (d == "BOOL") return at::kBool;
  return std::nullopt;
}

bool is_float_dtype(const std::string& d) {
  return d == "F64" || d == "F32" || d == "F16" || d == "BF16" || d == "F8_E4M3";
}

float f8_e4m3_to_float(uint8_t v) {
  const int sign = v >> 7, exp = (v >> 3) & 0xF, man = v & 0x7;
  float out;
  if (exp == 0xF && man == 0x7) {
    out = NAN;  // e4m3fn has no infinities; S.1111.111 is NaN
  } else if (exp == 0) {
    out = std::ldexp(static_cast<float>(man) / 8.0f, -6);
  } else {
    out = std::ldexp(1.0f + static_cast<float>(man) / 8.0f, exp - 7);
  }
  return sign ? -out : out;
}

// A JSON value quoted in a message: short, and printable.
std::string json_text(const nlohmann::json& v) { return json_excerpt(v); }

const char* file_kind(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO (named pipe)";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

// Parses the header strictly (io::parse_json: bounded depth, linear time), refusing a key repeated in
// any object: nlohmann keeps the last of duplicate keys silently, and a tensor listed twice must not
// load whichever copy happens to come last.
nlohmann::json parse_header(const std::string& text, const std::string& where) {
  DITGEN_CHECK(!text.empty() && text[0] == '{', "'{}' is corrupt: its header does not start with '{{'",
               where);
  auto duplicate = [&](const std::vector<std::string>& parents, const std::string& key) {
    const std::string what =
        parents.empty() ? fmt::format("tensor '{}' is listed twice", printable(key))
                        : fmt::format("entry '{}' has key '{}' twice", printable(parents[0]), printable(key));
    return fmt::format("'{}' is corrupt: {} in its header", where, what);
  };
  nlohmann::json j = parse_json(text, fmt::format("'{}' is corrupt: its header", where), duplicate);
  DITGEN_CHECK(j.is_object(), "'{}' is corrupt: the header is not a JSON object", where);
  return j;
}

// One header entry, checked as the format's own validation does: dtype a defined string, shape an
// array of non-negative integers, data_offsets two non-negative integers, begin <= end, and
// elements x element size (no overflow) equal to end - begin.
TensorInfo parse_entry(const std::string& key, const nlohmann::json& v, const std::string& where) {
  const std::string name = printable(key);
  DITGEN_CHECK(v.is_object(),
               "'{}' is corrupt: entry '{}' is {}, not an object with dtype, shape and data_offsets", where,
               name, json_text(v));
  auto field = [&](const char* f) -> const nlohmann::json& {
    auto it = v.find(f);
    DITGEN_CHECK(it != v.end(), "'{}' is corrupt: tensor '{}' has no '{}'", where, name, f);
    return *it;
  };
  TensorInfo info;
  info.name = key;
  const auto& dtype = field("dtype");
  DITGEN_CHECK(dtype.is_string(), "'{}': tensor '{}' has dtype {}; dtypes are strings such as \"F32\"", where,
               name, json_text(dtype));
  info.dtype = dtype.get<std::string>();
  const uint64_t bits = dtype_bits(info.dtype);
  DITGEN_CHECK(bits != 0, "'{}': tensor '{}' has dtype '{}', which the safetensors format does not define",
               where, name, printable(info.dtype));

  const auto& shape = field("shape");
  DITGEN_CHECK(shape.is_array(), "'{}': tensor '{}' has shape {}; shapes are arrays of integers", where, name,
               json_text(shape));
  uint64_t numel = 1;
  bool overflow = false;  // sticky, as the crate's checked product: [2^40, 2^40, 0] is refused too
  for (const auto& d : shape) {
    DITGEN_CHECK(d.is_number_unsigned(),
                 "'{}': tensor '{}' has shape entry {}; shapes must be non-negative integers", where, name,
                 json_text(d));
    const uint64_t n = d.get<uint64_t>();
    DITGEN_CHECK(n <= static_cast<uint64_t>(INT64_MAX),
                 "'{}': tensor '{}' has shape entry {}, which is too large", where, name, n);
    overflow = __builtin_mul_overflow(numel, n, &numel) || overflow;
    info.shape.push_back(static_cast<int64_t>(n));
  }

  const auto& off = field("data_offsets");
  DITGEN_CHECK(off.is_array() && off.size() == 2,
               "'{}': tensor '{}' has data_offsets {}; they must be two integers [begin, end]", where, name,
               json_text(off));
  for (const auto& o : off)
    DITGEN_CHECK(o.is_number_unsigned(),
                 "'{}': tensor '{}' has data offset {}; offsets must be non-negative integers", where, name,
                 json_text(o));
  info.begin = off[0].get<uint64_t>();
  info.end = off[1].get<uint64_t>();
  DITGEN_CHECK(info.begin <= info.end, "'{}' is corrupt: tensor '{}' begins at byte {} but ends at byte {}",
               where, name, info.begin, info.end);

  uint64_t nbits = 0;
  overflow = __builtin_mul_overflow(numel, bits, &nbits) || overflow;
  DITGEN_CHECK(!overflow, "'{}' is corrupt: tensor '{}' ({} {}) has more bytes than 64 bits can count", where,
               name, info.dtype, shape_str(info.shape));
  DITGEN_CHECK(nbits % 8 == 0, "'{}' is corrupt: tensor '{}' ({} {}) does not fill whole bytes", where, name,
               info.dtype, shape_str(info.shape));
  DITGEN_CHECK(info.end - info.begin == nbits / 8,
               "'{}' is corrupt: tensor '{}' ({} {}) needs {} bytes but its offsets span {}", where, name,
               info.dtype, shape_str(info.shape), nbits / 8, info.end - info.begin);
  return info;
}

}  // namespace

int64_t dtype_size(const std::string& d) {
  const uint64_t bits = dtype_bits(d);
  DITGEN_CHECK(bits != 0 && bits % 8 == 0, "unsupported safetensors dtype '{}'", printable(d));
  return static_cast<int64_t>(bits / 8);
}

at::ScalarType dtype_to_scalar(const std::string& d) {
  auto t = readable_as(d);
  DITGEN_CHECK(t.has_value(), "unsupported safetensors dtype '{}'", printable(d));
  return *t;
}

std::string scalar_to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return "F64";
    case at::kFloat: return "F32";
    case at::kHalf: return "F16";
    case at::kBFloat16: return "BF16";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kShort: return "I16";
    case at::kChar: return "I8";
    case at::kByte: return "U8";
    case at::kBool: return "BOOL";
    default: fail("cannot store tensors of type {} in safetensors", c10::toString(t));
  }
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}
std::string shape_str(at::IntArrayRef shape) { return shape_str(shape.vec()); }

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  const std::string where = printable(path);
  // Only regular files: opening a FIFO blocks forever, and a device or folder is never a checkpoint.
  // stat first so that no device is even opened; fstat again in case the path changed in between.
  struct stat st {};
  DITGEN_CHECK(::stat(path.c_str(), &st) == 0, "cannot open '{}': {}", where, std::strerror(errno));
  DITGEN_CHECK(S_ISREG(st.st_mode), "'{}' is {}, not a safetensors file", where, file_kind(st.st_mode));
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  DITGEN_CHECK(f->fd_ >= 0, "cannot open '{}': {}", where, std::strerror(errno));
  DITGEN_CHECK(fstat(f->fd_, &st) == 0, "cannot stat '{}': {}", where, std::strerror(errno));
  DITGEN_CHECK(S_ISREG(st.st_mode), "'{}' is {}, not a safetensors file", where, file_kind(st.st_mode));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  DITGEN_CHECK(size >= 8, "'{}' is not a safetensors file: {} bytes, too short for a header", where, size);

  uint64_t header_len = 0;  // little-endian u64, as is every supported host
  DITGEN_CHECK(pread(f->fd_, &header_len, 8, 0) == 8, "cannot read '{}'", where);
  DITGEN_CHECK(header_len <= kMaxHeader,
               "'{}' is corrupt: header length {} is over the format's limit of {} bytes", where, header_len,
               kMaxHeader);
  DITGEN_CHECK(header_len <= size - 8,
               "'{}' is truncated or corrupt: header length {} but the file has {} bytes", where, header_len,
               size);
  std::string header(header_len, '\0');
  DITGEN_CHECK(pread(f->fd_, header.data(), header_len, 8) == static_cast<ssize_t>(header_len),
               "cannot read the header of '{}'", where);
  f->data_offset_ = 8 + header_len;
  const uint64_t data_size = size - f->data_offset_;

  const nlohmann::json j = parse_header(header, where);
  for (auto it = j.begin(); it != j.end(); ++it) {
    const auto& v = it.value();
    if (it.key() == "__metadata__") {
      DITGEN_CHECK(v.is_object() || v.is_null(),
                   "'{}' is corrupt: __metadata__ is {}, not an object of strings", where, json_text(v));
      if (v.is_null()) continue;
      for (auto m = v.begin(); m != v.end(); ++m) {
        DITGEN_CHECK(m.value().is_string(), "'{}' is corrupt: __metadata__ entry '{}' is {}, not a string",
                     where, printable(m.key()), json_text(m.value()));
        f->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    TensorInfo info = parse_entry(it.key(), v, where);
    DITGEN_CHECK(
        info.end <= data_size,
        "'{}' is truncated: tensor '{}' ends at byte {} of the data section, which has only {} bytes", where,
        printable(info.name), info.end, data_size);
    f->tensors_.emplace(info.name, std::move(info));
  }

  // Sorted by offset, the tensors must tile the data section exactly: no overlap (two tensors sharing
  // bytes), no hole and no trailing bytes (bytes nobody reads mean the header lost an entry).
  std::vector<const TensorInfo*> order;
  order.reserve(f->tensors_.size());
  for (const auto& kv : f->tensors_) order.push_back(&kv.second);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::tie(a->begin, a->end) < std::tie(b->begin, b->end);
  });
  uint64_t covered = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* t : order) {
    DITGEN_CHECK(
        t->begin >= covered,
        "'{}' is corrupt: tensor '{}' (bytes {}..{}) overlaps tensor '{}' (bytes {}..{}) in the data section",
        where, printable(t->name), t->begin, t->end, prev ? printable(prev->name) : "",
        prev ? prev->begin : 0, prev ? prev->end : 0);
    DITGEN_CHECK(
        t->begin == covered,
        "'{}' is corrupt: bytes {}..{} of the data section belong to no tensor (a hole before tensor '{}')",
        where, covered, t->begin, printable(t->name));
    covered = t->end;
    prev = t;
  }
  DITGEN_CHECK(
      covered == data_size,
      "'{}' is corrupt: the data section has {} bytes but its tensors cover only {} ({} trailing bytes)",
      where, data_size, covered, data_size - covered);

  f->map_size_ = size;
  if (size > 0) {
    void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, f->fd_, 0);
    DITGEN_CHECK(p != MAP_FAILED, "cannot mmap '{}': {}", where, std::strerror(errno));
    f->map_ = static_cast<uint8_t*>(p);
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, map_size_);
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  DITGEN_CHECK(it != tensors_.end(), "'{}' has no tensor '{}'", printable(path_), printable(name));
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

at::Tensor SafetensorsFile::read(const std::string& name) {
  // An unreadable dtype is refused by the read below, which names the file and the tensor.
  return read(name, Slice::whole(), readable_as(info(name).dtype).value_or(at::kFloat), at::kCPU);
}

at::Tensor SafetensorsFile::read(const std::string& name, const Slice& slice, at::ScalarType dtype,
                                 const at::Device& device) {
  const TensorInfo& ti = info(name);
  DITGEN_CHECK(
      readable_as(ti.dtype).has_value(),
      "'{}': tensor '{}' has dtype {}, which ditgen cannot read (it reads F64, F32, F16, BF16, F8_E4M3, "
      "I64, I32, I16, I8, U8 and BOOL)",
      printable(path_), printable(name), ti.dtype);
  // A weight read as floating point must be stored as floating point: an I32 tensor of a float's byte size
  // (a relabelled header) would otherwise load as integers cast to float, and a BOOL mask as 0/1 weights.
  // Integer reads (token ids, indices) likewise need integers, not truncated floats. The one exception:
  // F8_E4M3 weights read as their bit patterns (U8) for the FP8 GEMM, which applies their scales itself.
  const bool stored_float = is_float_dtype(ti.dtype);
  const bool e4m3_bits = ti.dtype == "F8_E4M3" && dtype == at::kByte;
  DITGEN_CHECK(stored_float == at::isFloatingType(dtype) || e4m3_bits,
               "'{}': tensor '{}' is stored as {}, but ditgen reads {} there (stored as {}); the file does not "
               "hold what the model expects (a wrong or relabelled tensor?)",
               printable(path_), printable(name), ti.dtype,
               at::isFloatingType(dtype) ? "floating-point values" : "integers",
               at::isFloatingType(dtype) ? "F32, BF16, F16, F8_E4M3 or F64" : "an integer dtype");
  const int64_t elt = dtype_size(ti.dtype);
  const bool f8 = ti.dtype == "F8_E4M3";
  const at::ScalarType stored = f8 ? at::kByte : dtype_to_scalar(ti.dtype);

  std::vector<int64_t> out_shape = ti.shape;
  int64_t outer = 1, inner = 1, dim_size = 1;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  if (slice.is_whole()) {
    ranges = {{0, 1}};
    for (int64_t d : ti.shape) inner *= d;
  } else {
    const int nd = static_cast<int>(ti.shape.size());
    DITGEN_CHECK(slice.dim < nd, "'{}': cannot slice tensor '{}' of shape {} along dim {}", printable(path_),
                 printable(name), shape_str(ti.shape), slice.dim);
    for (int d = 0; d < slice.dim; ++d) outer *= ti.shape[d];
    for (int d = slice.dim + 1; d < nd; ++d) inner *= ti.shape[d];
    dim_size = ti.shape[slice.dim];
    int64_t total = 0;
    for (auto [start, len] : slice.ranges) {
      DITGEN_CHECK(start >= 0 && len >= 0 && start + len <= dim_size,
                   "'{}': slice [{}, {}) of dim {} is outside tensor '{}' of shape {}", printable(path_),
                   start, start + len, slice.dim, printable(name), shape_str(ti.shape));
      total += len;
    }
    out_shape[slice.dim] = total;
    ranges = slice.ranges;
  }

  at::Tensor host = at::empty(out_shape, at::TensorOptions().dtype(stored));
  uint8_t* dst = static_cast<uint8_t*>(host.data_ptr());
  const uint8_t* src = map_ + data_offset_ + ti.begin;
  // Copy [outer][range][inner] blocks; each block is contiguous in the file.
  for (int64_t o = 0; o < outer; ++o) {
    for (auto [start, len] : ranges) {
      const uint64_t n = static_cast<uint64_t>(len * inner * elt);
      const uint64_t off = static_cast<uint64_t>((o * dim_size + start) * inner * elt);
      std::memcpy(dst, src + off, n);
      dst += n;
      bytes_read_ += n;
    }
  }
  // Drop the mapped pages from this process's RSS: they stay in the page cache, not in our memory.
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t b = (data_offset_ + ti.begin) / page * page;
  madvise(map_ + b, data_offset_ + ti.end - b, MADV_DONTNEED);

  // F8_E4M3 asked for as bytes: the stored e4m3fn bit patterns, for FP8 linears that take them as they are.
  if (f8 && dtype == at::kByte) return device == host.device() ? host : host.to(device);
  if (f8) {
    static const auto table = [] {
      std::array<float, 256> t{};
      for (int v = 0; v < 256; ++v) t[v] = f8_e4m3_to_float(static_cast<uint8_t>(v));
      return t;
    }();
    at::Tensor up = at::empty(out_shape, at::kFloat);
    const uint8_t* s = host.data_ptr<uint8_t>();
    float* d = up.data_ptr<float>();
    for (int64_t k = 0, n = host.numel(); k < n; ++k) d[k] = table[s[k]];
    host = up;
  }
  if (host.scalar_type() != dtype) host = host.to(dtype);
  if (device != host.device()) host = host.to(device);
  return host;
}

void write_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t n = static_cast<uint64_t>(c.numel() * c.element_size());
    header[name] = {{"dtype", scalar_to_dtype(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + n}}};
    offset += n;
    data.push_back(c);
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8) h.push_back(' ');
  std::ofstream out(path, std::ios::binary);
  DITGEN_CHECK(out.good(), "cannot write '{}'", path);
  const uint64_t hl = h.size();
  out.write(reinterpret_cast<const char*>(&hl), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const auto& c : data)
    out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
  DITGEN_CHECK(out.good(), "failed writing '{}'", path);
}

}  // namespace ditgen::io
