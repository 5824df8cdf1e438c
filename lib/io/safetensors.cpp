#include "lib/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lib/runtime/error.h"

namespace ditgen::io {

namespace {

// Header larger than this is certainly corrupt (real checkpoints have < 10 MB headers).
constexpr uint64_t kMaxHeader = 100ull << 20;

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

}  // namespace

int64_t dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "F8_E4M3" || d == "I8" || d == "U8" || d == "BOOL") return 1;
  fail("unsupported safetensors dtype '{}'", d);
}

at::ScalarType dtype_to_scalar(const std::string& d) {
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
  fail("unsupported safetensors dtype '{}'", d);
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
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DITGEN_CHECK(f->fd_ >= 0, "cannot open '{}': {}", path, std::strerror(errno));
  struct stat st {};
  DITGEN_CHECK(fstat(f->fd_, &st) == 0, "cannot stat '{}': {}", path, std::strerror(errno));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  DITGEN_CHECK(size >= 8, "'{}' is not a safetensors file: {} bytes, too short for a header", path, size);

  uint64_t header_len = 0;
  DITGEN_CHECK(pread(f->fd_, &header_len, 8, 0) == 8, "cannot read '{}'", path);
  DITGEN_CHECK(header_len <= kMaxHeader && 8 + header_len <= size,
               "'{}' is truncated or corrupt: header length {} but the file has {} bytes", path,
               header_len, size);
  std::string header(header_len, '\0');
  DITGEN_CHECK(pread(f->fd_, header.data(), header_len, 8) == static_cast<ssize_t>(header_len),
               "cannot read the header of '{}'", path);
  f->data_offset_ = 8 + header_len;
  const uint64_t data_size = size - f->data_offset_;

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const std::exception& e) {
    fail("'{}' is corrupt: its header is not valid JSON ({})", path, e.what());
  }
  DITGEN_CHECK(j.is_object(), "'{}' is corrupt: the header is not a JSON object", path);
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it.value().is_object())
        for (auto m = it.value().begin(); m != it.value().end(); ++m)
          if (m.value().is_string()) f->metadata_[m.key()] = m.value().get<std::string>();
      continue;
    }
    const auto& v = it.value();
    TensorInfo info;
    info.name = it.key();
    try {
      info.dtype = v.at("dtype").get<std::string>();
      info.shape = v.at("shape").get<std::vector<int64_t>>();
      auto off = v.at("data_offsets").get<std::vector<uint64_t>>();
      DITGEN_CHECK(off.size() == 2, "'{}': tensor '{}' has malformed data_offsets", path, info.name);
      info.begin = off[0];
      info.end = off[1];
    } catch (const nlohmann::json::exception& e) {
      fail("'{}' is corrupt: entry '{}' lacks dtype/shape/data_offsets ({})", path, info.name, e.what());
    }
    int64_t numel = 1;
    for (int64_t d : info.shape) {
      DITGEN_CHECK(d >= 0, "'{}': tensor '{}' has a negative dimension", path, info.name);
      numel *= d;
    }
    const uint64_t want = static_cast<uint64_t>(numel * dtype_size(info.dtype));
    DITGEN_CHECK(info.end >= info.begin && info.end - info.begin == want,
                 "'{}' is corrupt: tensor '{}' ({} {}) needs {} bytes but its offsets span {}", path,
                 info.name, info.dtype, shape_str(info.shape), want, info.end - info.begin);
    DITGEN_CHECK(info.end <= data_size,
                 "'{}' is truncated: tensor '{}' ends at byte {} of the data section, which has only {} "
                 "bytes",
                 path, info.name, info.end, data_size);
    f->tensors_.emplace(info.name, std::move(info));
  }

  f->map_size_ = size;
  if (size > 0) {
    void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, f->fd_, 0);
    DITGEN_CHECK(p != MAP_FAILED, "cannot mmap '{}': {}", path, std::strerror(errno));
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
  DITGEN_CHECK(it != tensors_.end(), "'{}' has no tensor '{}'", path_, name);
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

at::Tensor SafetensorsFile::read(const std::string& name) {
  const auto& i = info(name);
  return read(name, Slice::whole(), dtype_to_scalar(i.dtype), at::kCPU);
}

at::Tensor SafetensorsFile::read(const std::string& name, const Slice& slice, at::ScalarType dtype,
                                 const at::Device& device) {
  const TensorInfo& ti = info(name);
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
    DITGEN_CHECK(slice.dim < nd, "'{}': cannot slice tensor '{}' of shape {} along dim {}", path_, name,
                 shape_str(ti.shape), slice.dim);
    for (int d = 0; d < slice.dim; ++d) outer *= ti.shape[d];
    for (int d = slice.dim + 1; d < nd; ++d) inner *= ti.shape[d];
    dim_size = ti.shape[slice.dim];
    int64_t total = 0;
    for (auto [start, len] : slice.ranges) {
      DITGEN_CHECK(start >= 0 && len >= 0 && start + len <= dim_size,
                   "'{}': slice [{}, {}) of dim {} is outside tensor '{}' of shape {}", path_, start,
                   start + len, slice.dim, name, shape_str(ti.shape));
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
