#include "lib/nn/fp8_source.h"

#include "lib/io/printable.h"
#include "lib/nn/names.h"
#include "lib/runtime/error.h"

namespace ditgen::nn {

namespace {

// `m.<suffix>` -> `m.weight`, or "" when `key` does not end with `.<suffix>`.
std::string weight_of(const std::string& key, const std::string& suffix) {
  if (!ends_with(key, "." + suffix)) return "";
  return key.substr(0, key.size() - suffix.size()) + "weight";
}

}  // namespace

Fp8Scales::Fp8Scales(const io::TensorStore& store) {
  for (const auto& k : store.keys()) {
    if (k == "scaled_fp8" || ends_with(k, ".scaled_fp8") || ends_with(k, ".comfy_quant")) {
      markers_.insert(k);
      continue;
    }
    for (const char* suffix : {"weight_scale", "scale_weight"}) {
      const std::string w = weight_of(k, suffix);
      if (w.empty()) continue;
      const auto [it, fresh] = scale_of_.emplace(w, k);
      DITGEN_CHECK(fresh, "'{}' holds two scales for '{}': '{}' and '{}'", io::printable(store.location()),
                   io::printable(w), io::printable(it->second), io::printable(k));
    }
    for (const char* suffix : {"input_scale", "scale_input"}) {
      const std::string w = weight_of(k, suffix);
      if (w.empty()) continue;
      const auto [it, fresh] = input_of_.emplace(w, k);
      DITGEN_CHECK(fresh, "'{}' holds two input scales for '{}': '{}' and '{}'", io::printable(store.location()),
                   io::printable(w), io::printable(it->second), io::printable(k));
    }
  }
}

bool Fp8Scales::is_aux(const std::string& key) const {
  if (markers_.count(key)) return true;
  for (const char* suffix : {"weight_scale", "scale_weight"}) {
    auto it = scale_of_.find(weight_of(key, suffix));
    if (it != scale_of_.end() && it->second == key) return true;
  }
  for (const char* suffix : {"input_scale", "scale_input"}) {
    auto it = input_of_.find(weight_of(key, suffix));
    if (it != input_of_.end() && it->second == key) return true;
  }
  return false;
}

std::vector<std::string> Fp8Scales::companions(const std::string& weight_key) const {
  std::vector<std::string> out;
  if (auto it = scale_of_.find(weight_key); it != scale_of_.end()) out.push_back(it->second);
  if (auto it = input_of_.find(weight_key); it != input_of_.end()) out.push_back(it->second);
  return out;
}

at::Tensor Fp8Scales::scale_of(io::TensorStore& store, const std::string& key, const io::Slice& slice,
                               bool per_channel_always) const {
  const auto& info = store.info(key);
  const int64_t N = info.shape.empty() ? 1 : info.shape[0];
  // Rows of `slice` (this rank's output channels) in order.
  auto rows = [&] {
    std::vector<std::pair<int64_t, int64_t>> r;
    if (slice.dim == 0) r = slice.ranges;
    else r.emplace_back(0, N);
    return r;
  };
  auto local_rows = [&] {
    int64_t n = 0;
    for (auto [s, l] : rows()) n += l;
    return n;
  };
  auto it = scale_of_.find(key);
  if (it == scale_of_.end()) {
    // No scale at all in the component (a plain cast), or an F8 tensor that is not a weight: scale 1.
    const bool is_weight = ends_with(key, ".weight");
    DITGEN_CHECK(!scaled() || !is_weight,
                 "tensor '{}' in '{}' is stored as F8_E4M3 without a scale ('{}' or '{}'), though this checkpoint "
                 "has scales for other weights: its scale is missing (the file is incomplete or converted wrongly)",
                 io::printable(key), io::printable(store.file_of(key)),
                 io::printable(key.substr(0, key.size() - 6) + "weight_scale"),
                 io::printable(key.substr(0, key.size() - 6) + "scale_weight"));
    return per_channel_always ? at::ones({local_rows()}, at::kFloat) : at::ones({}, at::kFloat);
  }
  const std::string& sk = it->second;
  const auto& sinfo = store.info(sk);
  int64_t numel = 1;
  for (auto d : sinfo.shape) numel *= d;
  at::Tensor s = store.read(sk, io::Slice::whole(), at::kFloat, at::kCPU);
  DITGEN_CHECK(at::isfinite(s).all().item<bool>(), "scale '{}' in '{}' is not finite", io::printable(sk),
               io::printable(store.file_of(sk)));
  if (numel == 1) {
    s = s.reshape({});
    return per_channel_always ? s.expand({local_rows()}).contiguous() : s;
  }
  const bool channel = info.shape.size() >= 1 && numel == N &&
                       (sinfo.shape.size() == 1 || (sinfo.shape.size() == 2 && sinfo.shape[1] == 1));
  DITGEN_CHECK(channel,
               "scale '{}' in '{}' has shape {} but weight '{}' has shape {}: ditgen reads one scale per tensor or "
               "one per output channel ([{}] or [{}, 1]), not block scales",
               io::printable(sk), io::printable(store.file_of(sk)), io::shape_str(sinfo.shape), io::printable(key),
               io::shape_str(info.shape), N, N);
  s = s.reshape({N});
  std::vector<at::Tensor> parts;
  for (auto [start, len] : rows()) parts.push_back(s.narrow(0, start, len));
  return parts.size() == 1 ? parts[0].contiguous() : at::cat(parts, 0);
}

at::Tensor Fp8Scales::dequantize(io::TensorStore& store, const std::string& key, const io::Slice& slice,
                                 at::ScalarType dtype, const at::Device& device) const {
  // e4m3 values are exact in float32; the product is the float32 product torch computes for
  // fp8.float() * scale.
  at::Tensor v = store.read(key, slice, at::kFloat, at::kCPU);
  at::Tensor s = scale_of(store, key, slice, /*per_channel_always=*/false);
  if (s.dim() == 0) {
    v.mul_(s);
  } else {
    std::vector<int64_t> shape(static_cast<size_t>(v.dim()), 1);
    shape[0] = s.size(0);
    v.mul_(s.view(shape));
  }
  if (v.scalar_type() != dtype) v = v.to(dtype);
  return device == v.device() ? v : v.to(device);
}

Fp8Weight Fp8Scales::read(io::TensorStore& store, const std::string& key, const io::Slice& slice,
                          const at::Device& device) const {
  DITGEN_CHECK(store.info(key).shape.size() == 2, "internal: the FP8 form of '{}' needs a 2-D tensor",
               io::printable(key));
  Fp8Weight w;
  w.bits = store.read(key, slice, at::kByte, device);  // the stored e4m3fn bit patterns
  // e4m3fn has no infinities; S.1111.111 is NaN, which `load` would refuse as a non-finite weight.
  DITGEN_CHECK(!w.bits.bitwise_and(0x7F).eq(0x7F).any().item<bool>(), "tensor '{}' in '{}' holds NaN (e4m3 0x7F)",
               io::printable(key), io::printable(store.file_of(key)));
  w.scale = scale_of(store, key, slice, /*per_channel_always=*/true).to(device);
  return w;
}

}  // namespace ditgen::nn
