#include "lib/nn/ops.h"

#include <spdlog/spdlog.h>
#include <torch/version.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <list>
#include <mutex>
#include <set>
#include <string>

#include "lib/io/safetensors.h"
#include "lib/runtime/env.h"
#include "lib/runtime/error.h"

#ifdef DITGEN_CUDA
#include <c10/cuda/CUDAStream.h>

#include "lib/nn/layer_norm_modulate_cuda.h"
#include "lib/nn/qk_norm_rope_cuda.h"
#include "lib/nn/rms_rope_cuda.h"
#include "lib/nn/elementwise_cuda.h"
#endif
#ifdef DITGEN_FP8_ATTENTION
#include "lib/nn/attention_fp8_cuda.h"
#endif

namespace ditgen::nn {

at::Tensor layer_norm(const at::Tensor& x, double eps) {
  const int64_t d = x.size(-1);
  if (x.scalar_type() == at::kFloat || x.is_cuda()) return at::layer_norm(x, {d}, {}, {}, eps);
  return at::layer_norm(x.to(at::kFloat), {d}, {}, {}, eps).to(x.scalar_type());
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
#if TORCH_VERSION_MAJOR >= 2 && (TORCH_VERSION_MAJOR > 2 || TORCH_VERSION_MINOR >= 4)
  return at::rms_norm(x, {x.size(-1)}, weight, eps);
#else
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor r = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true).add_(eps));
  return (xf * r).to(x.scalar_type()) * weight;
#endif
}

at::Tensor rms_norm_cast_first(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor r = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true).add_(eps));
  return weight * (xf * r).to(x.scalar_type());
}

namespace {

// Repeats key/value heads for grouped-query attention: [B, S, Hk, D] -> [B, S, H, D].
at::Tensor expand_kv(const at::Tensor& t, int64_t heads) {
  const int64_t hk = t.size(2);
  if (hk == heads) return t;
  DITGEN_CHECK(heads % hk == 0, "attention: {} query heads are not a multiple of {} key heads", heads, hk);
  return t.repeat_interleave(heads / hk, 2);
}

// Reference math path in fp32, over blocks of queries so the score matrix stays cache-sized.
// Rows with no visible key give 0 and an lse of -inf.
AttentionLse math_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            const std::optional<at::Tensor>& mask, bool want_lse) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const int64_t B = q.size(0), Sq = q.size(1), H = q.size(2), Sk = k.size(1);
  at::Tensor qh = q.transpose(1, 2).to(at::kFloat);                          // [B, H, Sq, D]
  at::Tensor kt = expand_kv(k, H).transpose(1, 2).to(at::kFloat).transpose(-1, -2);  // [B, H, D, Sk]
  at::Tensor vh = expand_kv(v, H).transpose(1, 2).to(at::kFloat);            // [B, H, Sk, D]
  at::Tensor out = at::empty({B, H, Sq, q.size(-1)}, qh.options());
  at::Tensor lse = want_lse ? at::empty({B, H, Sq}, qh.options()) : at::Tensor();
  at::Tensor m = mask ? mask->expand({B, H, Sq, Sk}) : at::Tensor();
  const int64_t block = std::max<int64_t>(16, (int64_t{1} << 21) / std::max<int64_t>(B * H * Sk, 1));
  for (int64_t s0 = 0; s0 < Sq; s0 += block) {
    const int64_t n = std::min(block, Sq - s0);
    at::Tensor s = at::matmul(qh.narrow(2, s0, n), kt).mul_(scale);          // [B, H, n, Sk]
    at::Tensor visible;
    if (mask) {
      at::Tensor mb = m.narrow(2, s0, n);
      s.masked_fill_(mb.logical_not(), -std::numeric_limits<float>::infinity());
      visible = mb.any(-1, /*keepdim=*/true);                                   // [B, H, n, 1]
    }
    if (want_lse) lse.narrow(2, s0, n).copy_(at::logsumexp(s, -1));
    at::Tensor p = at::softmax(s, -1);
    if (mask) p = at::where(visible, p, at::zeros({}, p.options()));  // softmax of all -inf is NaN
    out.narrow(2, s0, n).copy_(at::matmul(p, vh));
  }
  return {out.transpose(1, 2).to(q.scalar_type()), want_lse ? lse.transpose(1, 2).contiguous() : at::Tensor()};
}

AttentionBackend g_backend = AttentionBackend::Auto;

#ifdef DITGEN_FP8_ATTENTION
// --attention fp8 takes attention of at least this many queries and keys (DITGEN_FP8_ATTENTION_MIN_TOKENS, for
// A/B measurements): below, the quantisers' passes cost more than FP8 saves (bench/results/*fp8_attention*).
int64_t fp8_attention_min_tokens() {
  static const int64_t n = runtime::env_whole_number("DITGEN_FP8_ATTENTION_MIN_TOKENS", 2048, 1,
                                                      "a positive whole number of tokens");
  return n;
}
#endif

#if TORCH_VERSION_MAJOR >= 2  // the fused kernels' entry (LibTorch 1.13, the CPU build's, has none)
// --attention fp8 where FP8 attention does not apply: bf16 attention, said once per reason.
void warn_fp8_declined(const std::string& why, const at::Tensor& q, const at::Tensor& k) {
  static std::mutex mutex;
  static std::set<std::string> said;
  const std::lock_guard<std::mutex> lock(mutex);
  if (!said.insert(why).second) return;
  spdlog::warn("--attention fp8: not for attention [B {}, S {}/{}, H {}, D {}, {}] ({}): bf16 attention there",
               q.size(0), q.size(1), k.size(1), q.size(2), q.size(-1), c10::toString(q.scalar_type()), why);
}

// The fused kernel for [B, S, H, D] inputs (passed as [B, H, S, D] views of the same memory), with the
// fp32 log-sum-exp [B, Sq, H] that Ring attention merges with. Nothing when none applies (the callers
// then use SDPA's dispatcher or the math path).
std::optional<AttentionLse> fused_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            bool want_lse) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  static std::atomic<bool> cudnn_usable{true};
  const int64_t d = q.size(-1);
#ifdef DITGEN_FP8_ATTENTION
  if (g_backend == AttentionBackend::Fp8 && q.is_cuda() &&
      std::min(q.size(1), k.size(1)) >= fp8_attention_min_tokens()) {
    std::string why;
    if (auto r = fp8_attention_cuda(q, k, v, want_lse, &why)) return r;
    warn_fp8_declined(why, q, k);
  }
#endif
  if (!q.is_cuda() || (q.scalar_type() != at::kBFloat16 && q.scalar_type() != at::kHalf) || k.size(2) != q.size(2) ||
      d % 8 != 0 || q.size(1) == 0 || k.size(1) == 0)
    return std::nullopt;
  const int64_t B = q.size(0), H = q.size(2), S = q.size(1);
  const at::Tensor qt = q.transpose(1, 2), kt = k.transpose(1, 2), vt = v.transpose(1, 2);
  auto finish = [&](const at::Tensor& out, const at::Tensor& lse) {  // out [B, H, S, D], lse [B, H, S(, 1)]
    AttentionLse r{out.transpose(1, 2), at::Tensor()};
    if (want_lse) r.lse = lse.reshape({B, H, S}).transpose(1, 2).contiguous();
    return r;
  };
  const bool auto_kernel = g_backend == AttentionBackend::Auto || g_backend == AttentionBackend::Fp8;
  if (auto_kernel && d <= 128 && cudnn_usable) {
    try {
      auto r = at::_scaled_dot_product_cudnn_attention(qt, kt, vt, std::nullopt, /*compute_log_sumexp=*/want_lse);
      return finish(std::get<0>(r), std::get<1>(r));
    } catch (const c10::Error& e) {
      cudnn_usable = false;
      const std::string why = e.what_without_backtrace();
      spdlog::warn(
          "cuDNN attention declined [B {}, S {}/{}, H {}, D {}, {}] ({}); flash attention from here on", B, S,
          k.size(1), H, d, c10::toString(q.scalar_type()), why.substr(0, why.find('\n')));
    }
  }
  if (g_backend == AttentionBackend::Sdpa && !want_lse) return std::nullopt;  // the dispatcher's choice
  if (d > 256) return std::nullopt;
  auto r = at::_scaled_dot_product_flash_attention(qt, kt, vt);
  return finish(std::get<0>(r), std::get<1>(r));
#else
  return std::nullopt;
#endif
}
#endif

}  // namespace

const char* attention_backend_name() {
  switch (g_backend) {
    case AttentionBackend::Flash: return "flash";
    case AttentionBackend::Sdpa: return "sdpa";
    case AttentionBackend::Fp8: return "fp8";
    case AttentionBackend::Auto: break;
  }
  return "auto";
}

void set_attention_backend(AttentionBackend backend) {
#ifndef DITGEN_FP8_ATTENTION
#ifdef DITGEN_CUDA
  DITGEN_CHECK(backend != AttentionBackend::Fp8,
               "--attention fp8: this build has no FP8 attention: configure it with the cuDNN frontend's headers "
               "(-DCUDNN_FRONTEND_ROOT=<cudnn-frontend>/include) and cuDNN (-DCUDNN_ROOT), or use --attention auto");
#else
  DITGEN_CHECK(backend != AttentionBackend::Fp8,
               "--attention fp8 runs cuDNN's FP8 attention on Hopper GPUs: this is a CPU build (use --attention auto)");
#endif
#else
  if (backend == AttentionBackend::Fp8) fp8_attention_min_tokens();  // a bad override fails at start-up
#endif
  g_backend = backend;
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask) {
#if TORCH_VERSION_MAJOR >= 2
  if (!mask)
    if (auto r = fused_attention(q, k, v, /*want_lse=*/false)) return r->out;
  if (q.is_cuda()) {
    if (mask && g_backend == AttentionBackend::Fp8) warn_fp8_declined("a mask", q, k);
    // Fused kernels (flash / memory-efficient / cuDNN) in [B, H, S, D].
    at::Tensor kh = expand_kv(k, q.size(2)), vh = expand_kv(v, q.size(2));
    std::optional<at::Tensor> m;
    if (mask) m = *mask;
    at::Tensor o = at::scaled_dot_product_attention(q.transpose(1, 2), kh.transpose(1, 2), vh.transpose(1, 2), m);
    at::Tensor out = o.transpose(1, 2);
    if (mask) {
      // PyTorch >= 2.5 already returns 0 for fully masked rows; make it explicit for older kernels.
      at::Tensor any = mask->any(-1).expand({q.size(0), q.size(2), q.size(1)}).transpose(1, 2).unsqueeze(-1);
      out = at::where(any, out, at::zeros_like(out));
    }
    return out;
  }
#endif
  return math_attention(q, k, v, mask, /*want_lse=*/false).out;
}

AttentionLse attention_with_lse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  if (auto r = fused_attention(q, k, v, /*want_lse=*/true)) return *r;
#endif
  return math_attention(q, k, v, std::nullopt, /*want_lse=*/true);
}

const std::vector<at::Tensor>& visible_key_positions(const at::Tensor& key_mask, const at::Device& device) {
  struct Entry {
    std::string key;  // the device, the shape and the mask's bytes
    std::vector<at::Tensor> positions;
  };
  constexpr size_t kEntries = 8;
  static std::mutex mutex;
  // Most recent first. Never destroyed: its device tensors must not be freed after CUDA shuts down at exit.
  static auto& cache = *new std::list<Entry>();
  const at::Tensor m = key_mask.to(at::kCPU, at::kBool).contiguous();
  std::string key = device.str() + ":" + std::to_string(m.size(0)) + "x" + std::to_string(m.size(1)) + ":";
  key.append(static_cast<const char*>(m.data_ptr()), static_cast<size_t>(m.numel()));
  const std::lock_guard<std::mutex> lock(mutex);
  for (auto it = cache.begin(); it != cache.end(); ++it)
    if (it->key == key) {
      cache.splice(cache.begin(), cache, it);
      return cache.front().positions;
    }
  Entry e{std::move(key), {}};
  for (int64_t b = 0; b < m.size(0); ++b) e.positions.push_back(m[b].nonzero().squeeze(1).to(device));
  cache.push_front(std::move(e));
  if (cache.size() > kEntries) cache.pop_back();
  return cache.front().positions;
}

AttentionLse attention_visible_keys(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& key_mask, bool want_lse) {
  const at::Tensor m = key_mask.to(at::kCPU, at::kBool);
  DITGEN_CHECK(m.dim() == 2 && m.size(0) == q.size(0) && m.size(1) == k.size(1),
               "attention: key mask [{}, {}] does not fit {} keys of batch {}", m.size(0), m.dim() == 2 ? m.size(1) : -1,
               k.size(1), q.size(0));
  auto run = [&](const at::Tensor& qb, const at::Tensor& kb, const at::Tensor& vb) -> AttentionLse {
    if (want_lse) return attention_with_lse(qb, kb, vb);
    return {attention(qb, kb, vb), at::Tensor()};
  };
  if (m.all().item<bool>()) return run(q, k, v);
  // A copy: a later mask may push this one's entry out of the cache while its tensors are in use.
  const std::vector<at::Tensor> positions = visible_key_positions(m, k.device());
  std::vector<at::Tensor> outs, lses;
  for (int64_t b = 0; b < q.size(0); ++b) {
    const at::Tensor qb = q.narrow(0, b, 1);
    const at::Tensor& idx = positions[static_cast<size_t>(b)];
    AttentionLse r;
    if (idx.numel() == 0) {
      r.out = at::zeros_like(qb);
      if (want_lse)
        r.lse = at::full({1, q.size(1), q.size(2)}, -std::numeric_limits<float>::infinity(),
                         q.options().dtype(at::kFloat));
    } else {
      r = run(qb, k.narrow(0, b, 1).index_select(1, idx), v.narrow(0, b, 1).index_select(1, idx));
    }
    outs.push_back(r.out);
    if (want_lse) lses.push_back(r.lse);
  }
  return {at::cat(outs, 0), want_lse ? at::cat(lses, 0) : at::Tensor()};
}

at::Tensor rope_interleaved(const at::Tensor& x, const at::Tensor& freqs) {
  // (a + ib)(c + is) = (ac - bs) + i(as + bc): y[2p] = a c - b s, y[2p+1] = b c + a s.
  at::Tensor xf = x.to(at::kFloat).contiguous();
  auto shape = xf.sizes().vec();
  shape.back() /= 2;
  shape.push_back(2);
  at::Tensor rotated = at::view_as_complex(xf.view(shape)) * freqs.unsqueeze(1);  // [B, S, H, D/2]
  return at::view_as_real(rotated).flatten(-2).to(x.scalar_type());
}

at::Tensor layer_norm_modulate(const at::Tensor& x, const at::Tensor& scale1, const at::Tensor& shift, double eps) {
#ifdef DITGEN_CUDA
  // The kernel reads bf16 pairs (16-byte vectors where the launcher finds them aligned).
  auto aligned4 = [](const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 4 == 0; };
  const bool fused = x.is_cuda() && x.dim() == 3 && x.scalar_type() == at::kBFloat16 && x.is_contiguous() &&
                     x.size(2) % 2 == 0 && scale1.scalar_type() == at::kBFloat16 && shift.scalar_type() == at::kBFloat16 &&
                     scale1.is_contiguous() && shift.is_contiguous() && scale1.numel() == x.size(0) * x.size(2) &&
                     shift.numel() == x.size(0) * x.size(2) && aligned4(x) && aligned4(scale1) && aligned4(shift);
  if (fused) {
    at::Tensor out = at::empty(x.sizes(), x.options());
    const bool ok = layer_norm_modulate_bf16(x.data_ptr(), scale1.data_ptr(), shift.data_ptr(), out.data_ptr(),
                                             x.size(0) * x.size(1), x.size(1), x.size(2), static_cast<float>(eps),
                                             c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
    DITGEN_CHECK(ok, "the fused LayerNorm + modulation kernel failed to launch");
    return out;
  }
#endif
  return at::addcmul(shift, layer_norm(x, eps), scale1);
}

namespace {

// The fused QK norm + RoPE kernel into `out` where it applies (CUDA build, bf16 on a GPU, each item's [S, H, D]
// rows of `out` contiguous); false elsewhere.
bool qk_norm_rope_kernel(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps,
                         const at::Tensor& freqs) {
#ifdef DITGEN_CUDA
  const int64_t D = x.size(3);
  const bool fused = x.is_cuda() && x.dim() == 4 && x.scalar_type() == at::kBFloat16 &&
                     weight.scalar_type() == at::kBFloat16 && weight.is_contiguous() && x.stride(3) == 1 &&
                     D % 2 == 0 && x.stride(0) % 2 == 0 && x.stride(1) % 2 == 0 && x.stride(2) % 2 == 0 &&
                     reinterpret_cast<uintptr_t>(x.data_ptr()) % 4 == 0 && freqs.scalar_type() == at::kComplexFloat &&
                     freqs.is_contiguous() && freqs.size(0) == x.size(1) && freqs.size(1) == D / 2;
  // Each item's [S, H, D] rows contiguous; items anywhere (4-byte aligned).
  const bool rows_fit = out.stride(3) == 1 && out.stride(2) == D && out.stride(1) == x.size(2) * D &&
                        out.stride(0) % 2 == 0 && reinterpret_cast<uintptr_t>(out.data_ptr()) % 4 == 0;
  if (!fused || !rows_fit) return false;
  const bool ok = qk_norm_rope_bf16(x.data_ptr(), x.size(0), x.size(1), x.size(2), D, x.stride(0), x.stride(1),
                                    x.stride(2), weight.data_ptr(), freqs.data_ptr(), static_cast<float>(eps),
                                    out.data_ptr(), out.stride(0),
                                    c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  DITGEN_CHECK(ok, "the fused QK norm + RoPE kernel failed to launch");
  return true;
#else
  return false;
#endif
}

}  // namespace

at::Tensor qk_norm_rope(const at::Tensor& x, const at::Tensor& weight, double eps, const at::Tensor& freqs) {
  if (x.is_cuda()) {
    at::Tensor out = at::empty(x.sizes(), x.options());
    if (qk_norm_rope_kernel(out, x, weight, eps, freqs)) return out;
  }
  return rope_interleaved(rms_norm(x, weight, eps), freqs);
}

void qk_norm_rope_into(const at::Tensor& out, const at::Tensor& x, const at::Tensor& weight, double eps,
                       const at::Tensor& freqs) {
  DITGEN_CHECK(out.sizes() == x.sizes() && out.scalar_type() == x.scalar_type(),
               "qk_norm_rope_into: output {} {} for input {} {}", io::shape_str(out.sizes()),
               c10::toString(out.scalar_type()), io::shape_str(x.sizes()), c10::toString(x.scalar_type()));
  if (!qk_norm_rope_kernel(out, x, weight, eps, freqs)) out.copy_(rope_interleaved(rms_norm(x, weight, eps), freqs));
}

namespace {

#ifdef DITGEN_CUDA
bool fusable_bf16_rows(const at::Tensor& x) {
  return x.is_cuda() && x.dim() == 3 && x.scalar_type() == at::kBFloat16 && x.is_contiguous() && x.size(2) % 2 == 0 &&
         reinterpret_cast<uintptr_t>(x.data_ptr()) % 4 == 0;
}
void* stream_of(const at::Tensor& x) { return c10::cuda::getCurrentCUDAStream(x.device().index()).stream(); }
bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }
bool bf16_cuda(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 && t.is_cuda(); }

// What the row kernels take as a gate of rows [B, S, D] (undefined: none): one [D] row per item or per token,
// last dim contiguous, rows 16-byte aligned.
bool gate_fits(const at::Tensor& gate, int64_t B, int64_t S, int64_t D) {
  return !gate.defined() ||
         (bf16_cuda(gate) && gate.dim() == 3 && gate.size(0) == B && (gate.size(1) == 1 || gate.size(1) == S) &&
          gate.size(2) == D && gate.stride(2) == 1 && gate.stride(0) % 8 == 0 &&
          (gate.size(1) == 1 || gate.stride(1) % 8 == 0) && aligned16(gate));
}
bool bias_fits(const at::Tensor& bias, int64_t D) {
  return !bias.defined() || (bf16_cuda(bias) && bias.numel() == D && bias.is_contiguous() && aligned16(bias));
}

// A (1 + scale, shift) pair [B, 1 or S, D] as the row kernels read it: contiguous, with the offsets of an
// item's and a token's row; nothing where it does not fit rows [B, S, D].
struct ModulationRows {
  at::Tensor scale1, shift;
  int64_t batch_stride = 0, token_stride = 0;
};
std::optional<ModulationRows> modulation_rows(const at::Tensor& scale1, const at::Tensor& shift, int64_t B,
                                              int64_t S, int64_t D) {
  const auto full = [&](const at::Tensor& t) {
    return t.dim() == 3 && t.size(0) == B && (t.size(1) == 1 || t.size(1) == S) && t.size(2) == D &&
           t.scalar_type() == at::kBFloat16;
  };
  if (!full(scale1) || !full(shift) || scale1.size(1) != shift.size(1)) return std::nullopt;
  const int64_t T = scale1.size(1);
  return ModulationRows{scale1.contiguous(), shift.contiguous(), T * D, T == 1 ? 0 : D};
}
#endif

}  // namespace

at::Tensor rms_modulate(const at::Tensor& x, double eps, const at::Tensor& scale1, const at::Tensor& shift) {
  DITGEN_CHECK(scale1.defined() == shift.defined(), "rms_modulate: scale1 and shift come together");
#ifdef DITGEN_CUDA
  if (fusable_bf16_rows(x)) {
    const int64_t B = x.size(0), S = x.size(1), D = x.size(2);
    const std::optional<ModulationRows> m =
        scale1.defined() ? modulation_rows(scale1, shift, B, S, D) : std::make_optional(ModulationRows{});
    if (m) {
      at::Tensor out = at::empty(x.sizes(), x.options());
      const bool ok = rms_modulate_bf16(x.data_ptr(), m->scale1.defined() ? m->scale1.data_ptr() : nullptr,
                                        m->shift.defined() ? m->shift.data_ptr() : nullptr, out.data_ptr(), B * S, S,
                                        D, m->batch_stride, m->token_stride, static_cast<float>(eps), stream_of(x));
      DITGEN_CHECK(ok, "the fused RMS norm + modulation kernel failed to launch");
      return out;
    }
  }
#endif
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor n = (xf * at::rsqrt(xf.pow(2).mean(-1, true).add_(eps))).to(x.scalar_type());
  return scale1.defined() ? at::addcmul(shift, n, scale1) : n;
}

at::Tensor swiglu_concat(const at::Tensor& a, const at::Tensor& gate_up) {
  const int64_t F = gate_up.size(-1) / 2;
#ifdef DITGEN_CUDA
  const at::Tensor gu = gate_up.dim() >= 2 ? gate_up.reshape({-1, 2 * F}) : at::Tensor();  // a view when strided rows
  const at::Tensor a2 = a.defined() && gu.defined() ? a.reshape({-1, a.size(-1)}) : at::Tensor();
  const int64_t Da = a2.defined() ? a2.size(1) : 0;
  auto rows_fit = [](const at::Tensor& t) {
    return t.is_cuda() && t.scalar_type() == at::kBFloat16 && t.stride(1) == 1 && t.stride(0) % 8 == 0 &&
           reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  };
  if (gu.defined() && rows_fit(gu) && F % 8 == 0 && Da % 8 == 0 &&
      (!a.defined() || (rows_fit(a2) && a2.size(0) == gu.size(0)))) {
    auto shape = gate_up.sizes().vec();
    shape.back() = Da + F;
    at::Tensor out = at::empty(shape, gate_up.options());
    const bool ok = swiglu_concat_bf16(a2.defined() ? a2.data_ptr() : nullptr, a2.defined() ? a2.stride(0) : 0, Da,
                                       gu.data_ptr(), gu.stride(0), F, out.data_ptr(), gu.size(0), stream_of(gate_up));
    DITGEN_CHECK(ok, "the fused SwiGLU kernel failed to launch");
    return out;
  }
#endif
  at::Tensor h = at::silu(gate_up.narrow(-1, 0, F)) * gate_up.narrow(-1, F, F);
  return a.defined() ? at::cat({a, h}, -1) : h;
}

at::Tensor gated_residual(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, const at::Tensor& bias) {
#ifdef DITGEN_CUDA
  const int64_t B = x.dim() == 3 ? x.size(0) : 0, S = x.dim() == 3 ? x.size(1) : 0, D = x.dim() == 3 ? x.size(2) : 0;
  const bool rows = bf16_cuda(x) && x.dim() == 3 && D % 8 == 0 && x.is_contiguous() && aligned16(x) && bf16_cuda(y) &&
                    y.sizes() == x.sizes() && y.is_contiguous() && aligned16(y);
  if (rows && gate_fits(gate, B, S, D) && bias_fits(bias, D)) {
    at::Tensor out = at::empty(x.sizes(), x.options());
    const int64_t gate_token = gate.defined() && gate.size(1) > 1 ? gate.stride(1) : 0;
    const bool ok = gated_residual_bf16(x.data_ptr(), y.data_ptr(), gate.defined() ? gate.data_ptr() : nullptr,
                                        bias.defined() ? bias.data_ptr() : nullptr, out.data_ptr(), B * S, S, D,
                                        gate.defined() ? gate.stride(0) : 0, gate_token, stream_of(x));
    DITGEN_CHECK(ok, "the fused gated residual kernel failed to launch");
    return out;
  }
#endif
  const at::Tensor t = bias.defined() ? y + bias : y;
  return gate.defined() ? at::addcmul(x, gate, t) : x + t;
}

namespace {

#ifdef DITGEN_CUDA
// gated_residual_rms as one kernel, or nothing where the rows, the gate, the bias or a modulation do not fit
// its vector form (gated_residual_rms_bf16).
std::optional<ResidualNorms> fused_gated_residual_rms(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate, const at::Tensor& bias, double eps,
    const std::vector<std::pair<at::Tensor, at::Tensor>>& mods) {
  if (!fusable_bf16_rows(x) || !aligned16(x) || x.size(2) % 8 != 0 || x.size(2) > kGatedResidualRmsMaxD)
    return std::nullopt;
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2);
  const bool y_fits = !y.defined() || (bf16_cuda(y) && y.sizes() == x.sizes() && y.is_contiguous() && aligned16(y));
  if (!y_fits || !gate_fits(gate, B, S, D) || !bias_fits(bias, D)) return std::nullopt;
  std::vector<ModulationRows> modulations;  // alive until the launch
  std::vector<RmsModulation> outputs(mods.size());
  for (size_t j = 0; j < mods.size(); ++j) {
    const auto& [scale1, shift] = mods[j];
    if (!scale1.defined()) continue;
    std::optional<ModulationRows> m = modulation_rows(scale1, shift, B, S, D);
    if (!m || !bf16_cuda(m->scale1) || !bf16_cuda(m->shift) || !aligned16(m->scale1) || !aligned16(m->shift))
      return std::nullopt;
    outputs[j].scale1 = m->scale1.data_ptr();
    outputs[j].shift = m->shift.data_ptr();
    outputs[j].batch_stride = m->batch_stride;
    outputs[j].token_stride = m->token_stride;
    modulations.push_back(std::move(*m));
  }
  ResidualNorms r{y.defined() ? at::empty(x.sizes(), x.options()) : x, {}};
  for (RmsModulation& o : outputs) {
    r.norms.push_back(at::empty(x.sizes(), x.options()));
    o.out = r.norms.back().data_ptr();
  }
  const int64_t gate_token = gate.defined() && gate.size(1) > 1 ? gate.stride(1) : 0;
  const bool ok = gated_residual_rms_bf16(
      x.data_ptr(), y.defined() ? y.data_ptr() : nullptr, gate.defined() ? gate.data_ptr() : nullptr,
      bias.defined() ? bias.data_ptr() : nullptr, y.defined() ? r.x.data_ptr() : nullptr, B * S, S, D,
      gate.defined() ? gate.stride(0) : 0, gate_token, outputs.data(), static_cast<int>(outputs.size()),
      static_cast<float>(eps), stream_of(x));
  DITGEN_CHECK(ok, "the fused gated residual + RMS norm kernel failed to launch");
  return r;
}
#endif

}  // namespace

ResidualNorms gated_residual_rms(const at::Tensor& x, const at::Tensor& y, const at::Tensor& gate,
                                 const at::Tensor& bias, double eps,
                                 const std::vector<std::pair<at::Tensor, at::Tensor>>& mods) {
  DITGEN_CHECK(mods.size() == 1 || mods.size() == 2, "gated_residual_rms: 1 or 2 modulations, got {}",
               mods.size());
  DITGEN_CHECK(y.defined() || (!gate.defined() && !bias.defined()),
               "gated_residual_rms: a gate or bias without y");
  for (const auto& [scale1, shift] : mods)
    DITGEN_CHECK(scale1.defined() == shift.defined(), "gated_residual_rms: scale1 and shift come together");
#ifdef DITGEN_CUDA
  if (auto r = fused_gated_residual_rms(x, y, gate, bias, eps, mods)) return std::move(*r);
#endif
  ResidualNorms r{y.defined() ? gated_residual(x, y, gate, bias) : x, {}};
  for (const auto& [scale1, shift] : mods) r.norms.push_back(rms_modulate(r.x, eps, scale1, shift));
  return r;
}

namespace {

#ifdef DITGEN_CUDA
// Whether x [B, S, D] with `weight` and the tables suit the fused RMS + RoPE kernel.
bool rope_fusable(const at::Tensor& x, const at::Tensor& weight, Rotary rotary, const at::Tensor& cos,
                  const at::Tensor& sin, int64_t head_dim) {
  const int64_t S = x.size(1), D = x.size(2);
  const bool tables = rotary == Rotary::None ||
                      (cos.is_cuda() && sin.is_cuda() && cos.scalar_type() == at::kFloat &&
                       sin.scalar_type() == at::kFloat && cos.is_contiguous() && sin.is_contiguous() &&
                       cos.size(0) == S && cos.numel() == S * (rotary == Rotary::SplitHalf ? D / 2 : D) &&
                       sin.sizes() == cos.sizes());
  return fusable_bf16_rows(x) && tables && weight.scalar_type() == at::kBFloat16 && weight.is_contiguous() &&
         weight.numel() == D && (rotary != Rotary::SplitHalf || (head_dim % 2 == 0 && D % head_dim == 0));
}

// The fused kernel over each (x, weight) of `inputs` (the same shapes, the same tables): their results.
std::vector<at::Tensor> fused_rms_rope(const std::vector<std::pair<at::Tensor, at::Tensor>>& inputs, double eps,
                                       int64_t width, const std::function<void(at::Tensor&)>& reduce, Rotary rotary,
                                       const at::Tensor& cos, const at::Tensor& sin, int64_t head_dim) {
  const at::Tensor& x0 = inputs.front().first;
  const int64_t B = x0.size(0), S = x0.size(1), D = x0.size(2);
  std::vector<at::Tensor> sums, outs;
  std::vector<RopeRows> rows;
  for (const auto& [x, weight] : inputs) {
    at::Tensor sumsq;
    if (reduce) {  // the mean square spans other ranks' slices: their sums first
      sumsq = at::empty({B, S, 1}, x.options().dtype(at::kFloat));
      DITGEN_CHECK(sum_squares_bf16(x.data_ptr(), sumsq.data_ptr<float>(), B * S, D, stream_of(x)),
                   "the fused sum-of-squares kernel failed to launch");
      reduce(sumsq);
    }
    outs.push_back(at::empty(x.sizes(), x.options()));
    sums.push_back(sumsq);
    rows.push_back({x.data_ptr(), weight.data_ptr(), sumsq.defined() ? sumsq.data_ptr<float>() : nullptr,
                    outs.back().data_ptr()});
  }
  const bool rotate = rotary != Rotary::None;
  const bool ok = rms_rope_bf16(rows.data(), static_cast<int>(rows.size()), static_cast<float>(width),
                                rotate ? cos.data_ptr<float>() : nullptr, rotate ? sin.data_ptr<float>() : nullptr,
                                rotate ? cos.numel() / S : 0, static_cast<int>(rotary), head_dim / 2, B, S, D,
                                static_cast<float>(eps), stream_of(x0));
  DITGEN_CHECK(ok, "the fused RMS norm + RoPE kernel failed to launch");
  return outs;
}
#endif

}  // namespace

at::Tensor rms_norm_rotary(const at::Tensor& x, const at::Tensor& weight, double eps, int64_t width,
                           const std::function<void(at::Tensor&)>& reduce, Rotary rotary, const at::Tensor& cos,
                           const at::Tensor& sin, int64_t head_dim) {
  const int64_t B = x.size(0), S = x.size(1), D = x.size(2);
#ifdef DITGEN_CUDA
  if (rope_fusable(x, weight, rotary, cos, sin, head_dim))
    return fused_rms_rope({{x, weight}}, eps, width, reduce, rotary, cos, sin, head_dim)[0];
#endif
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor ms = xf.pow(2).sum(-1, true);
  if (reduce) reduce(ms);
  ms.div_(static_cast<double>(width)).add_(eps);
  at::Tensor n = (xf * at::rsqrt(ms) * weight.to(at::kFloat)).to(x.scalar_type());
  if (rotary == Rotary::None) return n;
  // The rotation in fp32, cast back.
  at::Tensor nf = n.to(at::kFloat);
  if (rotary == Rotary::SplitHalf) {
    at::Tensor th = nf.view({B, S, D / head_dim, head_dim});
    const int64_t half = head_dim / 2;
    at::Tensor x1 = th.narrow(-1, 0, half), x2 = th.narrow(-1, half, half);
    at::Tensor c = cos.unsqueeze(0), s = sin.unsqueeze(0);  // [1, S, h, half]
    return at::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1).view({B, S, D}).to(x.scalar_type());
  }
  at::Tensor pairs = nf.view({B, S, D / 2, 2});
  at::Tensor rot = at::stack({-pairs.select(-1, 1), pairs.select(-1, 0)}, -1).view({B, S, D});
  return (nf * cos.unsqueeze(0) + rot * sin.unsqueeze(0)).to(x.scalar_type());
}

std::pair<at::Tensor, at::Tensor> rms_norm_rotary_pair(const at::Tensor& q, const at::Tensor& k,
                                                       const at::Tensor& q_weight, const at::Tensor& k_weight,
                                                       double eps, int64_t width,
                                                       const std::function<void(at::Tensor&)>& reduce,
                                                       Rotary rotary, const at::Tensor& cos, const at::Tensor& sin,
                                                       int64_t head_dim) {
#ifdef DITGEN_CUDA
  if (q.sizes() == k.sizes() && rope_fusable(q, q_weight, rotary, cos, sin, head_dim) &&
      rope_fusable(k, k_weight, rotary, cos, sin, head_dim)) {
    auto out = fused_rms_rope({{q, q_weight}, {k, k_weight}}, eps, width, reduce, rotary, cos, sin, head_dim);
    return {out[0], out[1]};
  }
#endif
  return {rms_norm_rotary(q, q_weight, eps, width, reduce, rotary, cos, sin, head_dim),
          rms_norm_rotary(k, k_weight, eps, width, reduce, rotary, cos, sin, head_dim)};
}

at::Tensor rope_pair_factors(const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t d = cos.size(-1);
  return at::complex(cos.slice(-1, 0, d, 2).contiguous(), sin.slice(-1, 0, d, 2).contiguous());
}

at::Tensor rope_half(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  at::Tensor c = cos.unsqueeze(2), s = sin.unsqueeze(2);          // [B, S, 1, D]
  return x * c + rotated * s;
}

}  // namespace ditgen::nn
