#include "lib/nn/weights.h"

#include <cmath>

#ifdef DITGEN_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#endif

#include "lib/io/printable.h"
#include "lib/nn/fp8_source.h"
#include "lib/nn/names.h"
#include "lib/runtime/error.h"
#include "lib/runtime/metrics.h"

namespace ditgen::nn {

uint64_t stable_hash(const std::string& s, uint64_t basis) {
  uint64_t h = basis;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// ---- CheckpointSource -------------------------------------------------------------------------

CheckpointSource::CheckpointSource(std::shared_ptr<io::TensorStore> store, std::string root,
                                   std::vector<std::string> ignore_prefixes)
    : store_(std::move(store)),
      root_(std::move(root)),
      fp8_(std::make_unique<Fp8Scales>(*store_)),
      ignore_(std::move(ignore_prefixes)) {}

CheckpointSource::~CheckpointSource() = default;

bool CheckpointSource::has(const std::string& key) const { return store_->has(root_ + key); }

const io::TensorInfo& CheckpointSource::checked_info(const std::string& full, const std::vector<int64_t>& full_shape) {
  DITGEN_CHECK(store_->has(full), "missing tensor '{}' (expected shape {}) in '{}'", io::printable(full),
               io::shape_str(full_shape), io::printable(store_->location()));
  const auto& info = store_->info(full);
  DITGEN_CHECK(info.shape == full_shape, "tensor '{}' in '{}' has shape {} but the model config needs {}",
               io::printable(full), io::printable(store_->file_of(full)), io::shape_str(info.shape),
               io::shape_str(full_shape));
  DITGEN_CHECK(info.dtype == "F8_E4M3" || !fp8_->has_scale(full),
               "tensor '{}' in '{}' is stored as {} but has an FP8 scale ('{}'): only F8_E4M3 weights carry scales",
               io::printable(full), io::printable(store_->file_of(full)), info.dtype,
               io::printable(fp8_->companions(full).front()));
  used_.insert(full);
  for (const auto& c : fp8_->companions(full)) used_.insert(c);  // its scale; its input scale (unused)
  return info;
}

at::Tensor CheckpointSource::load(const std::string& key, const std::vector<int64_t>& full_shape,
                                  const io::Slice& slice, at::ScalarType dtype, const at::Device& device,
                                  Init) {
  const std::string full = root_ + key;
  const auto& info = checked_info(full, full_shape);
  at::Tensor t = info.dtype == "F8_E4M3" ? fp8_->dequantize(*store_, full, slice, dtype, device)
                                         : store_->read(full, slice, dtype, device);
  // A NaN or Inf weight poisons every activation after it and ends as a black image: refuse it here,
  // where the tensor and its file can still be named. Counting happens only on failure.
  if (at::isFloatingType(t.scalar_type()) && !at::isfinite(t).all().item<bool>()) {
    const std::string what =
        fmt::format("tensor '{}' in '{}'", io::printable(full), io::printable(store_->file_of(full)));
    const at::Tensor stored = info.dtype == "F8_E4M3"
                                  ? fp8_->dequantize(*store_, full, slice, at::kFloat, at::kCPU)
                                  : store_->read(full, slice, io::dtype_to_scalar(info.dtype), at::kCPU);
    const int64_t nan = at::isnan(stored).sum().item<int64_t>();
    const int64_t inf = at::isinf(stored).sum().item<int64_t>();
    DITGEN_CHECK(nan + inf > 0, "{} holds {} values too large for {}: {} of {} become Inf (try --dtype fp32)",
                 what, info.dtype, c10::toString(dtype), t.numel() - at::isfinite(t).sum().item<int64_t>(),
                 t.numel());
    fail("{} has non-finite weights: {} NaN and {} Inf of {} values{}", what, nan, inf, stored.numel(),
         slice.is_whole() ? "" : " in this rank's slice");
  }
  return t;
}

std::optional<Fp8Weight> CheckpointSource::load_fp8(const std::string& key, const std::vector<int64_t>& full_shape,
                                                    const io::Slice& slice, const at::Device& device) {
  const std::string full = root_ + key;
  // Only weights stored with a scale: an unscaled e4m3 cast (or any other dtype) is read by `load` and
  // quantised with scales of its own.
  if (!store_->has(full) || !fp8_->has_scale(full) || full_shape.size() != 2) return std::nullopt;
  const auto& info = checked_info(full, full_shape);
  if (info.dtype != "F8_E4M3") return std::nullopt;
  return fp8_->read(*store_, full, slice, device);
}

bool CheckpointSource::ignored(const std::string& k) const {
  for (const auto& p : ignore_)
    if (starts_with(k, p) || (p[0] == '.' && ends_with(k, p))) return true;
  return false;
}

int64_t CheckpointSource::expected_count() const {
  int64_t n = 0;
  for (const auto& k : store_->keys()) n += ignored(k) || fp8_->is_aux(k) ? 0 : 1;
  return n;
}

void CheckpointSource::check_all_used() const {
  std::vector<std::string> unexpected;
  for (const auto& k : store_->keys())
    if (!used_.count(k) && !ignored(k) && !fp8_->is_marker(k)) unexpected.push_back(k);
  if (unexpected.empty()) return;
  std::string list;
  for (size_t i = 0; i < unexpected.size() && i < 8; ++i) list += (i ? ", " : "") + io::printable(unexpected[i]);
  if (unexpected.size() > 8) list += fmt::format(", ... ({} in all)", unexpected.size());
  fail("unexpected tensor(s) in '{}' that the model config does not declare: {} (does config.json match "
       "the weights?)",
       store_->location(), list);
}

// ---- RandomSource -----------------------------------------------------------------------------

at::Tensor RandomSource::load(const std::string& key, const std::vector<int64_t>& full_shape,
                              const io::Slice& slice, at::ScalarType dtype, const at::Device& device,
                              Init init) {
  // Large tensors are drawn on the target device (benchmarks at real size); small ones on the CPU
  // so that tiny models are identical on every device and mesh.
  int64_t numel = 1;
  for (auto d : full_shape) numel *= d;
  const bool on_device = device.is_cuda() && numel >= (1 << 20);
  at::Generator gen = on_device ? at::Generator() : at::detail::createCPUGenerator(seed_ ^ stable_hash(key));
  at::TensorOptions opt = at::TensorOptions().dtype(at::kFloat).device(on_device ? device : at::Device(at::kCPU));
  at::Tensor t;
#ifdef DITGEN_CUDA
  if (on_device) {
    gen = at::cuda::detail::createCUDAGenerator(device.index());
    gen.set_current_seed(seed_ ^ stable_hash(key));
  }
#endif
  auto normal = [&] { return at::randn(full_shape, gen, opt); };
  switch (init) {
    case Init::Linear: {
      const int64_t fan_in = full_shape.size() >= 2 ? numel / full_shape[0] : 1;
      t = normal().mul_(1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(fan_in, 1))));
      break;
    }
    case Init::Norm: t = normal().mul_(0.1).add_(1.0); break;
    case Init::Bias: t = normal().mul_(0.02); break;
    case Init::Embedding: t = normal(); break;
    case Init::Mean: t = normal().mul_(0.1); break;
    case Init::Variance: t = normal().abs_().add_(0.5); break;
  }
  if (!slice.is_whole()) {
    std::vector<at::Tensor> parts;
    for (auto [start, len] : slice.ranges) parts.push_back(t.narrow(slice.dim, start, len));
    // A copy: a narrowed view (contiguous when cut along dim 0) would keep the whole tensor's storage alive.
    t = parts.size() == 1 ? parts[0].clone(at::MemoryFormat::Contiguous) : at::cat(parts, slice.dim);
  }
  return t.to(device, dtype).contiguous();
}

// ---- RecordingSource --------------------------------------------------------------------------

at::Tensor RecordingSource::load(const std::string& key, const std::vector<int64_t>& full_shape,
                                 const io::Slice& slice, at::ScalarType dtype, const at::Device& device, Init init) {
  DITGEN_CHECK(slice.is_whole(), "internal: recording '{}' needs whole tensors (tp 1)", key);
  at::Tensor t = WrappedSource::load(key, full_shape, slice, dtype, device, init);
  recorded_[key] = t.to(at::kCPU).clone();
  return t;
}

// ---- ProgressSource ---------------------------------------------------------------------------

ProgressSource::ProgressSource(std::shared_ptr<WeightSource> inner, const std::string& label, int64_t total)
    : WrappedSource(std::move(inner)), progress_(std::make_unique<runtime::Progress>(label, total)) {}

ProgressSource::~ProgressSource() { progress_->finish(); }

at::Tensor ProgressSource::load(const std::string& key, const std::vector<int64_t>& full_shape,
                                const io::Slice& slice, at::ScalarType dtype, const at::Device& device, Init init) {
  runtime::Stopwatch sw(at::kCPU);
  at::Tensor t = WrappedSource::load(key, full_shape, slice, dtype, device, init);
  progress_->advance(sw.seconds(), static_cast<int64_t>(t.nbytes()));
  return t;
}

std::optional<Fp8Weight> ProgressSource::load_fp8(const std::string& key, const std::vector<int64_t>& full_shape,
                                                  const io::Slice& slice, const at::Device& device) {
  runtime::Stopwatch sw(at::kCPU);
  auto w = WrappedSource::load_fp8(key, full_shape, slice, device);
  if (w) progress_->advance(sw.seconds(), static_cast<int64_t>(w->bits.nbytes() + w->scale.nbytes()));
  return w;
}

// ---- Weights ----------------------------------------------------------------------------------

Weights::Weights(std::shared_ptr<WeightSource> source, at::ScalarType dtype, at::Device device, TpGroup tp)
    : source_(std::move(source)), dtype_(dtype), device_(device), tp_(tp) {}

Weights Weights::pp(const std::string& name) const {
  Weights w = *this;
  w.prefix_ = key(name);
  return w;
}

Weights Weights::with_tp(TpGroup tp) const {
  Weights w = *this;
  w.tp_ = tp;
  return w;
}

io::Slice Weights::slice_for(const std::string& k, const std::vector<int64_t>& full_shape,
                             const Shard& shard) const {
  if (shard.range) {
    const auto [start, len] = *shard.range;
    DITGEN_CHECK(shard.dim >= 0 && shard.dim < static_cast<int>(full_shape.size()) && start >= 0 && len >= 0 &&
                     start + len <= full_shape[shard.dim],
                 "internal: piece [{}, {}) of '{}' (shape {}) along dim {} is out of range", start, start + len, k,
                 io::shape_str(full_shape), shard.dim);
    if (start == 0 && len == full_shape[shard.dim]) return io::Slice::whole();
    io::Slice slice;
    slice.dim = shard.dim;
    slice.ranges.emplace_back(start, len);
    return slice;
  }
  if (shard.is_replicated() || tp_.size == 1) return io::Slice::whole();
  DITGEN_CHECK(shard.dim < static_cast<int>(full_shape.size()), "cannot shard '{}' of shape {} along dim {}",
               k, io::shape_str(full_shape), shard.dim);
  std::vector<int64_t> segments = shard.segments;
  if (segments.empty()) segments = {full_shape[shard.dim]};
  int64_t sum = 0;
  for (auto s : segments) sum += s;
  DITGEN_CHECK(sum == full_shape[shard.dim], "internal: segments of '{}' sum to {} but dim {} is {}", k, sum,
               shard.dim, full_shape[shard.dim]);
  io::Slice slice;
  slice.dim = shard.dim;
  int64_t offset = 0;
  for (auto s : segments) {
    DITGEN_CHECK(s % tp_.size == 0,
                 "tensor '{}' (shape {}): a segment of length {} along dim {} cannot be divided over {} "
                 "tensor-parallel ranks; choose a --tp that divides {}",
                 k, io::shape_str(full_shape), s, shard.dim, tp_.size, s);
    const int64_t piece = s / tp_.size;
    slice.ranges.emplace_back(offset + tp_.rank * piece, piece);
    offset += s;
  }
  return slice;
}

at::Tensor Weights::get(const std::string& name, const std::vector<int64_t>& full_shape, const Shard& shard,
                        Init init) const {
  const std::string k = key(name);
  return source_->load(k, full_shape, slice_for(k, full_shape, shard), dtype_, device_, init);
}

std::optional<Fp8Weight> Weights::get_fp8(const std::string& name, const std::vector<int64_t>& full_shape,
                                          const Shard& shard) const {
  const std::string k = key(name);
  return source_->load_fp8(k, full_shape, slice_for(k, full_shape, shard), device_);
}

}  // namespace ditgen::nn
