#pragma once
// Test helpers for checkpoints written by the tests: a fresh temporary folder, seeded random tensors, e4m3fn encoding as torch's `x.to(torch.float8_e4m3fn)` does it (round to nearest, ties
// to even; the callers clamp to +-448 first, as torch's cast would give NaN beyond it), its decoding,
// the torch-equivalent FP8 weight quantiser, and a safetensors writer for any dtype string and header
// metadata (write_safetensors stores ATen dtypes only; LibTorch 1.13 has no float8).
#include <ATen/ATen.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <unistd.h>
#include <string>
#include <vector>

namespace ditgen::test {

// An empty folder /tmp/ditgen_test_<name>_<pid> (removed first if left by an earlier run).
inline std::string temp_dir(const std::string& name) {
  const std::string dir = "/tmp/ditgen_test_" + name + "_" + std::to_string(::getpid());
  if (std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str()) != 0)
    throw std::runtime_error("cannot make the test folder " + dir);
  return dir;
}

// Standard normal values from a generator of its own (the same tensor for the same seed, any test order).
inline at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  return at::randn(shape, at::detail::createCPUGenerator(seed), at::kFloat);
}

// The e4m3fn value of bit pattern `v`: sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities,
// S.1111.111 is NaN.
inline float e4m3_decode(uint8_t v) {
  const int sign = v >> 7, exp = (v >> 3) & 0xF, man = v & 0x7;
  float out;
  if (exp == 0xF && man == 0x7) out = NAN;
  else if (exp == 0) out = std::ldexp(static_cast<float>(man), -9);  // subnormal: man/8 * 2^-6
  else out = std::ldexp(static_cast<float>(8 + man), exp - 10);     // (1 + man/8) * 2^(exp-7)
  return sign ? -out : out;
}

// Round to nearest e4m3fn, ties to the even code (even mantissa), |x| <= 448.
inline uint8_t e4m3_encode(float x) {
  static const std::array<float, 127> values = [] {  // codes 0x00..0x7E, increasing
    std::array<float, 127> t{};
    for (int c = 0; c < 127; ++c) t[c] = e4m3_decode(static_cast<uint8_t>(c));
    return t;
  }();
  if (std::isnan(x) || std::fabs(x) > 448.f) throw std::runtime_error("e4m3_encode: clamp to +-448 first");
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  const float a = std::fabs(x);
  int lo = 0;
  while (lo + 1 < 127 && values[lo + 1] <= a) ++lo;
  int code = lo;
  if (lo + 1 < 127 && values[lo] != a) {
    const float dlo = a - values[lo], dhi = values[lo + 1] - a;
    code = dhi < dlo || (dhi == dlo && (lo + 1) % 2 == 0) ? lo + 1 : lo;
  }
  return static_cast<uint8_t>(sign | code);
}

// torch: scale = amax / 448 in float32 (per output row, or over the tensor), q = (w / scale).clamp(+-448)
// .to(float8_e4m3fn). Returns (bits [N, K] uint8, scale [N] or [] float32).
inline std::pair<at::Tensor, at::Tensor> quantize_e4m3(const at::Tensor& w, bool per_channel) {
  at::Tensor wf = w.to(at::kFloat).contiguous();
  at::Tensor amax = per_channel ? wf.abs().amax(1) : wf.abs().max();
  at::Tensor scale = at::where(amax > 0, amax / 448.0, at::ones_like(amax)).to(at::kFloat);
  at::Tensor q = (per_channel ? wf / scale.unsqueeze(1) : wf / scale).clamp(-448.0, 448.0).contiguous();
  at::Tensor bits = at::empty(q.sizes(), at::kByte);
  const float* src = q.data_ptr<float>();
  uint8_t* dst = bits.data_ptr<uint8_t>();
  for (int64_t i = 0; i < q.numel(); ++i) dst[i] = e4m3_encode(src[i]);
  return {bits, scale.contiguous()};
}

// fp8.float() * scale in float32, as torch computes it.
inline at::Tensor dequantize_e4m3(const at::Tensor& bits, const at::Tensor& scale) {
  at::Tensor v = at::empty(bits.sizes(), at::kFloat);
  const uint8_t* src = bits.data_ptr<uint8_t>();
  float* dst = v.data_ptr<float>();
  for (int64_t i = 0; i < bits.numel(); ++i) dst[i] = e4m3_decode(src[i]);
  return scale.dim() == 0 ? v * scale : v * scale.view({-1, 1});
}

// A tensor as stored: its safetensors dtype string and its bytes (contiguous CPU `data`).
struct Stored {
  std::string dtype;
  at::Tensor data;
};

inline Stored stored(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  switch (c.scalar_type()) {
    case at::kFloat: return {"F32", c};
    case at::kBFloat16: return {"BF16", c};
    case at::kHalf: return {"F16", c};
    case at::kLong: return {"I64", c};
    case at::kByte: return {"U8", c};
    default: throw std::runtime_error("stored: unsupported dtype");
  }
}
inline Stored f8(const at::Tensor& bits) { return {"F8_E4M3", bits.contiguous()}; }

inline void write_file(const std::string& path, const std::map<std::string, Stored>& tensors,
                       const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, s] : tensors) {
    const uint64_t n = static_cast<uint64_t>(s.data.numel() * s.data.element_size());
    header[name] = {{"dtype", s.dtype}, {"shape", s.data.sizes().vec()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string h = header.dump();
  while ((h.size() + 8) % 8) h.push_back(' ');
  std::ofstream out(path, std::ios::binary);
  const uint64_t hl = h.size();
  out.write(reinterpret_cast<const char*>(&hl), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  for (const auto& [name, s] : tensors)
    out.write(static_cast<const char*>(s.data.data_ptr()),
              static_cast<std::streamsize>(s.data.numel() * s.data.element_size()));
  if (!out.good()) throw std::runtime_error("cannot write " + path);
}

}  // namespace ditgen::test
