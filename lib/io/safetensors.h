#pragma once
// Memory-mapped safetensors files with per-tensor slice reads: a rank reads only the rows (or
// columns) of a tensor that it owns, converted straight into the target dtype and device.
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ditgen::io {

struct TensorInfo {
  std::string name;
  std::string dtype;            // safetensors dtype string: F32, BF16, F16, F8_E4M3, I64, ...
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets inside the data section
};

// Which part of a tensor to read. `dim < 0` reads the whole tensor; otherwise the given
// [start, start+length) ranges along `dim`, concatenated in order along that dim.
struct Slice {
  int dim = -1;
  std::vector<std::pair<int64_t, int64_t>> ranges;

  static Slice whole() { return {}; }
  bool is_whole() const { return dim < 0; }
};

class SafetensorsFile {
 public:
  // Maps a regular file (a FIFO, device or folder is refused, never opened or read) and validates its
  // header as strictly as the format's own validation: header length <= 100 MB and within the file; a
  // JSON object without duplicate keys; each entry a defined dtype, a shape of non-negative integers
  // and two integer data_offsets whose span equals elements x element size (overflow checked); the
  // entries, sorted by offset, tiling the data section exactly (no overlap, hole or trailing bytes);
  // __metadata__ a string -> string object. Throws ditgen::Error naming the file, the tensor and the
  // fault; names from the file are quoted through io::printable.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // Reads `slice` of tensor `name` into a new tensor of `dtype` on `device`. F8_E4M3 is upcast, except
  // that asked for as kByte it gives the stored e4m3fn bit patterns.
  at::Tensor read(const std::string& name, const Slice& slice, at::ScalarType dtype,
                  const at::Device& device);
  // Reads the whole tensor in its stored dtype (F8 upcast to float) on the CPU.
  at::Tensor read(const std::string& name);

  uint64_t bytes_read() const { return bytes_read_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  int fd_ = -1;
  uint8_t* map_ = nullptr;
  uint64_t map_size_ = 0;
  uint64_t data_offset_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
  uint64_t bytes_read_ = 0;
};

// Writes tensors (contiguous CPU copies are made) to a safetensors file; used by tests and by
// `--dump` style debugging.
void write_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors);

// Bytes of one element of a safetensors dtype string; throws for unknown and sub-byte (F4, F6) dtypes.
int64_t dtype_size(const std::string& dtype);
// The ATen scalar type a safetensors dtype is read into (F8_E4M3 -> Float); throws for dtypes that
// ditgen cannot read (U16, U32, U64, F8_E5M2, ...).
at::ScalarType dtype_to_scalar(const std::string& dtype);
std::string scalar_to_dtype(at::ScalarType t);

std::string shape_str(const std::vector<int64_t>& shape);
std::string shape_str(at::IntArrayRef shape);

}  // namespace ditgen::io
