#include "lib/nn/residual_gemm_cuda.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAStream.h>
#include <cublasLt.h>

#include <map>
#include <mutex>
#include <tuple>

#include "lib/io/safetensors.h"
#include "lib/runtime/error.h"

namespace ditgen::nn {

namespace {

// The largest power of two (up to 256) dividing the address: the heuristic picks kernels for the alignment
// it is told, and assumes 256 bytes otherwise.
uint32_t alignment(const at::Tensor& t) {
  const auto p = reinterpret_cast<uintptr_t>(t.data_ptr());
  uint32_t a = 256;
  while (a > 1 && p % a != 0) a /= 2;
  return a;
}

struct Key {
  int device;
  int64_t M, N, K;
  bool fp32, bias;
  uint32_t align_a, align_x, align_d;
  auto tie() const { return std::tie(device, M, N, K, fp32, bias, align_a, align_x, align_d); }
  bool operator<(const Key& o) const { return tie() < o.tie(); }
};

// One shape's descriptors and algorithm, kept for the process (a model has a handful of shapes).
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w = nullptr, a = nullptr, x = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
  bool ok = false;
};

void check(cublasStatus_t s, const char* what) {
  DITGEN_CHECK(s == CUBLAS_STATUS_SUCCESS, "cuBLASLt {} failed (status {})", what, static_cast<int>(s));
}

cublasLtHandle_t handle_for(int device) {
  static std::map<int, cublasLtHandle_t> handles;
  auto& h = handles[device];
  if (h == nullptr) check(cublasLtCreate(&h), "handle creation");
  return h;
}

// Row-major D[M, N] = A[M, K] W[N, K]^T is column-major D^T[N, M] = W^T A^T: W transposed ("TN"); the rows of
// the column-major D are the output columns, which the bias runs along.
Plan make_plan(cublasLtHandle_t h, const Key& k) {
  Plan p;
  const cudaDataType_t t = k.fp32 ? CUDA_R_32F : CUDA_R_16BF;
  check(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "descriptor");
  const cublasOperation_t trans = CUBLAS_OP_T, plain = CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans), "TRANSA");
  check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &plain, sizeof plain), "TRANSB");
  if (k.bias) {
    const cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_BIAS;
    check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e), "epilogue");
    check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &t, sizeof t), "bias type");
  }
  check(cublasLtMatrixLayoutCreate(&p.w, t, k.K, k.N, k.K), "layout");
  check(cublasLtMatrixLayoutCreate(&p.a, t, k.K, k.M, k.K), "layout");
  check(cublasLtMatrixLayoutCreate(&p.x, t, k.N, k.M, k.N), "layout");
  cublasLtMatmulPreference_t pref = nullptr;
  check(cublasLtMatmulPreferenceCreate(&pref), "preference");
  const uint64_t max_workspace = 32u << 20;
  check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace,
                                             sizeof max_workspace),
        "workspace preference");
  const uint32_t align_w = 256;  // the weight: its own allocation
  for (auto [attr, value] : {std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_w},
                             std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, k.align_a},
                             std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, k.align_x},
                             std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, k.align_d}})
    check(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof value), "alignment preference");
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(h, p.op, p.w, p.a, p.x, p.x, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (s == CUBLAS_STATUS_SUCCESS && found > 0) {
    p.algo = result.algo;
    p.workspace = result.workspaceSize;
    p.ok = true;
  }
  return p;
}

}  // namespace

bool residual_gemm_cuda(const at::Tensor& out, const at::Tensor& x, const at::Tensor& a, const at::Tensor& w,
                        const at::Tensor& bias) {
  const at::ScalarType dt = x.scalar_type();
  DITGEN_CHECK((dt == at::kBFloat16 || dt == at::kFloat) && a.scalar_type() == dt && w.scalar_type() == dt &&
                   x.is_cuda() && x.dim() == 2 && a.dim() == 2 && w.dim() == 2 && x.is_contiguous() &&
                   a.is_contiguous() && w.is_contiguous() && out.is_contiguous() && out.sizes() == x.sizes() &&
                   out.scalar_type() == dt && a.size(0) == x.size(0) && w.size(0) == x.size(1) &&
                   w.size(1) == a.size(1) && (!bias.defined() || (bias.scalar_type() == dt && bias.numel() == x.size(1))),
               "internal: residual GEMM operands x {} a {} w {} do not fit", io::shape_str(x.sizes()),
               io::shape_str(a.sizes()), io::shape_str(w.sizes()));
  const int device = x.device().index();
  const Key key{device,         x.size(0),    x.size(1),    a.size(1),     dt == at::kFloat,
                bias.defined(), alignment(a), alignment(x), alignment(out)};
  static std::mutex mutex;
  static std::map<Key, Plan> plans;
  const std::lock_guard<std::mutex> lock(mutex);
  const cublasLtHandle_t h = handle_for(device);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, make_plan(h, key)).first;
  Plan& p = it->second;
  if (!p.ok) return false;
  if (bias.defined()) {
    const void* b = bias.data_ptr();
    check(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b), "bias pointer");
  }
  const at::Tensor workspace =
      p.workspace > 0 ? at::empty({static_cast<int64_t>(p.workspace)}, x.options().dtype(at::kByte)) : at::Tensor();
  const float one = 1.f;
  check(cublasLtMatmul(h, p.op, &one, w.data_ptr(), p.w, a.data_ptr(), p.a, &one, x.data_ptr(), p.x, out.data_ptr(),
                       p.x, &p.algo, workspace.defined() ? workspace.data_ptr() : nullptr, p.workspace,
                       c10::cuda::getCurrentCUDAStream(device).stream()),
        "matmul");
  return true;
}

}  // namespace ditgen::nn
