// FP8 attention through the cuDNN frontend's graph API (sdpa_fp8): one graph and execution plan per device
// and shape, built on first use and kept. Compiled only where CMake found the frontend's headers.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "lib/nn/attention_fp8_cuda.h"
#include "lib/nn/attention_fp8_quant_cuda.h"
#include "lib/runtime/error.h"

// LibTorch carries its own copy of the header-only frontend, possibly another version; ours is renamed so
// that the two copies' inline functions never stand in for each other at link or load time.
#define cudnn_frontend ditgen_cudnn_frontend
#define CUDNN_FRONTEND_SKIP_JSON_LIB 1
#include <cudnn_frontend.h>

namespace ditgen::nn {

namespace {

namespace fe = cudnn_frontend;
using TensorPtr = std::shared_ptr<fe::graph::Tensor_attributes>;

// The scalar inputs in the order sdpa_fp8 takes them, as indices of Fp8AttentionScalar.
constexpr int kScalarInputs[6] = {kDescaleQ, kDescaleK, kDescaleV, kDescaleS, kScaleS, kScaleO};

struct Plan {
  std::unique_ptr<fe::graph::Graph> graph;
  TensorPtr q, k, v, o, stats, amax_s, amax_o;
  TensorPtr scalars[6];
  int64_t workspace = 0;
  std::string error;  // set: cuDNN does not take this shape
};

using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, bool>;  // device, H, Sq, Sk, D, lse

cudnnHandle_t handle_for(int device) {
  static std::map<int, cudnnHandle_t> handles;  // one per device, kept for the process
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  cudnnHandle_t h = nullptr;
  const cudnnStatus_t st = cudnnCreate(&h);
  DITGEN_CHECK(st == CUDNN_STATUS_SUCCESS, "FP8 attention: cudnnCreate on GPU {} failed: {}", device,
               cudnnGetErrorString(st));
  handles.emplace(device, h);
  return h;
}

// [B, H, S, D] dims over memory laid out [B, S, H, D].
std::vector<int64_t> bshd_strides(int64_t S, int64_t H, int64_t D) { return {S * H * D, D, H * D, 1}; }

// The graph of one batch item (see fp8_attention_cuda).
void build(Plan& p, cudnnHandle_t handle, int64_t H, int64_t Sq, int64_t Sk, int64_t D, bool lse) {
  constexpr int64_t B = 1;
  p.graph = std::make_unique<fe::graph::Graph>();
  fe::graph::Graph& g = *p.graph;
  g.set_io_data_type(fe::DataType_t::FP8_E4M3)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  auto input = [&](const char* name, int64_t S) {
    return g.tensor(fe::graph::Tensor_attributes()
                        .set_name(name)
                        .set_dim({B, H, S, D})
                        .set_stride(bshd_strides(S, H, D)));
  };
  p.q = input("Q", Sq);
  p.k = input("K", Sk);
  p.v = input("V", Sk);
  const char* names[6] = {"descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o"};
  for (int i = 0; i < 6; ++i)
    p.scalars[i] = g.tensor(fe::graph::Tensor_attributes()
                                .set_name(names[i])
                                .set_dim({1, 1, 1, 1})
                                .set_stride({1, 1, 1, 1})
                                .set_data_type(fe::DataType_t::FLOAT));
  auto options = fe::graph::SDPA_fp8_attributes()
                     .set_name("sdpa_fp8")
                     .set_generate_stats(lse)
                     .set_attn_scale(static_cast<float>(1.0 / std::sqrt(static_cast<double>(D))));
  auto [o, stats, amax_s, amax_o] = g.sdpa_fp8(p.q, p.k, p.v, p.scalars[0], p.scalars[1], p.scalars[2],
                                               p.scalars[3], p.scalars[4], p.scalars[5], options);
  o->set_output(true).set_dim({B, H, Sq, D}).set_stride(bshd_strides(Sq, H, D));
  for (const TensorPtr& a : {amax_s, amax_o})
    a->set_output(true).set_dim({1, 1, 1, 1}).set_stride({1, 1, 1, 1}).set_data_type(fe::DataType_t::FLOAT);
  if (lse)
    stats->set_output(true)
        .set_dim({B, H, Sq, 1})
        .set_stride({H * Sq, Sq, 1, 1})
        .set_data_type(fe::DataType_t::FLOAT);
  p.o = o;
  p.stats = stats;
  p.amax_s = amax_s;
  p.amax_o = amax_o;

  auto step = [&](fe::error_t e, const char* what) {
    if (p.error.empty() && !e.is_good()) p.error = std::string("cuDNN ") + what + ": " + e.get_message();
    return p.error.empty();
  };
  step(g.validate(), "validate") && step(g.build_operation_graph(handle), "build_operation_graph") &&
      step(g.create_execution_plans({fe::HeurMode_t::A}), "create_execution_plans") &&
      step(g.check_support(handle), "check_support") && step(g.build_plans(handle), "build_plans") &&
      step(g.get_workspace_size(p.workspace), "get_workspace_size");
}

// Bf16 rows of a [B, S, H, D] tensor: each token's H * D values contiguous (else a contiguous copy).
std::pair<at::Tensor, Bf16Rows> rows_of(const at::Tensor& t) {
  const bool rows_contiguous = t.stride(3) == 1 && t.stride(2) == t.size(3) && t.stride(1) % 8 == 0 &&
                               t.stride(0) % 8 == 0 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  at::Tensor c = rows_contiguous ? t : t.contiguous();
  return {c, Bf16Rows{c.data_ptr(), c.size(0), c.size(1), c.size(2) * c.size(3), c.stride(0), c.stride(1)}};
}

}  // namespace

std::optional<AttentionLse> fp8_attention_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                               bool want_lse, std::string* why) {
  auto decline = [&](std::string reason) -> std::optional<AttentionLse> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  if (!q.is_cuda() || q.scalar_type() != at::kBFloat16 || k.scalar_type() != at::kBFloat16 ||
      v.scalar_type() != at::kBFloat16)
    return decline("it takes bf16 inputs on a GPU");
  const int64_t B = q.size(0), Sq = q.size(1), H = q.size(2), D = q.size(3), Sk = k.size(1);
  if (k.size(2) != H || v.size(2) != H) return decline("grouped key heads are not supported");
  if (v.size(3) != D || k.size(3) != D) return decline("q, k and v differ in head size");
  if (D % 16 != 0 || D > 128)
    return decline(fmt::format("head size {} (it needs a multiple of 16 up to 128)", D));
  if (Sq == 0 || Sk == 0) return decline("an empty sequence");
  // Measured on an H100 (cuDNN 9, bench/results/2026-12-06e_h100_fp8_attention): with fewer than 128 keys and
  // thousands of queries the FP8 kernel's output is wrong.
  if (Sk < 128) return decline(fmt::format("{} keys (cuDNN's FP8 kernel needs at least 128)", Sk));
  // Each batch item is a call of its own (below), its log-sum-exp rows at b * H * Sq floats: 16-byte aligned.
  if (want_lse && B > 1 && (H * Sq) % 4 != 0)
    return decline(
        fmt::format("a log-sum-exp of {} heads x {} queries per batch item (a multiple of 4 needed)", H, Sq));
  const int device = q.get_device();
  const cudaDeviceProp* prop = at::cuda::getDeviceProperties(device);
  if (prop->major != 9)
    return decline(fmt::format("compute capability {}.{} (cuDNN's FP8 attention is used on Hopper, 9.x)",
                               prop->major, prop->minor));

  c10::cuda::CUDAGuard guard(device);
  static std::mutex mutex;
  static std::map<Key, Plan>& plans = *new std::map<Key, Plan>();  // never destroyed: used until exit
  const std::lock_guard<std::mutex> lock(mutex);
  cudnnHandle_t handle = handle_for(device);
  // One batch item per call: with two or more in one call, the H100's FP8 kernel returned wrong outputs from
  // some runs (right log-sum-exp, wrong products with v; bench/results/2026-12-06e_h100_fp8_attention).
  Plan& plan = plans[Key{device, H, Sq, Sk, D, want_lse}];
  if (!plan.graph) build(plan, handle, H, Sq, Sk, D, want_lse);
  if (!plan.error.empty()) return decline(plan.error);

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream(device).stream();
  const auto [qc, q_rows] = rows_of(q);
  const auto [kc, k_rows] = rows_of(k);
  const auto [vc, v_rows] = rows_of(v);
  const at::TensorOptions fp8 = q.options().dtype(at::kFloat8_e4m3fn);
  at::Tensor q8 = at::empty({B, Sq, H, D}, fp8), k8 = at::empty({B, Sk, H, D}, fp8),
             v8 = at::empty({B, Sk, H, D}, fp8);
  at::Tensor o8 = at::empty({B, Sq, H, D}, fp8);
  at::Tensor scalars = at::empty({4 * kFp8AttentionScalars},
                                 q.options().dtype(at::kFloat));  // set by the quantiser, then cuDNN
  at::Tensor lse = want_lse ? at::empty({B, H, Sq}, q.options().dtype(at::kFloat)) : at::Tensor();
  at::Tensor workspace = at::empty({std::max<int64_t>(plan.workspace, 1)}, q.options().dtype(at::kByte));
  float* s = scalars.data_ptr<float>();

  const Bf16Rows in[3] = {q_rows, k_rows, v_rows};
  void* const out8[3] = {q8.data_ptr(), k8.data_ptr(), v8.data_ptr()};
  DITGEN_CHECK(quantize_attention_fp8(in, out8, s, stream),
               "FP8 attention: the quantiser's launch failed: {}", cudaGetErrorString(cudaGetLastError()));
  const cudnnStatus_t st = cudnnSetStream(handle, stream);
  DITGEN_CHECK(st == CUDNN_STATUS_SUCCESS, "FP8 attention: cudnnSetStream: {}", cudnnGetErrorString(st));
  auto* q8p = static_cast<uint8_t*>(q8.data_ptr());
  auto* k8p = static_cast<uint8_t*>(k8.data_ptr());
  auto* v8p = static_cast<uint8_t*>(v8.data_ptr());
  auto* o8p = static_cast<uint8_t*>(o8.data_ptr());
  for (int64_t b = 0; b < B; ++b) {  // the scales span the whole batch
    std::unordered_map<TensorPtr, void*> pack = {
        {plan.q, q8p + b * Sq * H * D}, {plan.k, k8p + b * Sk * H * D}, {plan.v, v8p + b * Sk * H * D},
        {plan.o, o8p + b * Sq * H * D}, {plan.amax_s, s + 4 * kAmaxS},  {plan.amax_o, s + 4 * kAmaxO}};
    for (int i = 0; i < 6; ++i) pack.emplace(plan.scalars[i], s + 4 * kScalarInputs[i]);
    if (want_lse) pack.emplace(plan.stats, lse.data_ptr<float>() + b * H * Sq);
    fe::error_t e = plan.graph->execute(handle, pack, workspace.data_ptr());
    DITGEN_CHECK(e.is_good(),
                 "FP8 attention [B {}, S {}/{}, H {}, D {}]: cuDNN execute failed: {} (--attention auto "
                 "runs bf16 attention)",
                 B, Sq, Sk, H, D, e.get_message());
  }
  at::Tensor out = at::empty({B, Sq, H, D}, q.options());
  DITGEN_CHECK(dequantize_attention_output_fp8(o8.data_ptr(), out.data_ptr(), out.numel(), s, stream),
               "FP8 attention: the output's launch failed: {}", cudaGetErrorString(cudaGetLastError()));
  return AttentionLse{out, want_lse ? lse.transpose(1, 2).contiguous() : at::Tensor()};
}

}  // namespace ditgen::nn
