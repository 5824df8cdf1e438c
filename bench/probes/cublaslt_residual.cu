// Probe: does cuBLASLt fuse a gated residual, x + gate * (a @ w^T + b), into the GEMM at full speed on this card?
// Times, per shape: (0) the GEMM with its bias epilogue (what nn::linear runs today), (0+r) that plus a separate
// gated-residual pass, (1) one GEMM with a per-column alpha vector (the gate), beta = 1 on C = x and the bias
// epilogue (bias pre-multiplied by the gate), (2) the same with a scalar alpha (the cost of reading C alone).
// Build: nvcc -O2 -std=c++17 -arch=sm_90a cublaslt_residual.cu -lcublasLt -o probe
// Result (2026-12-06, H100 80GB HBM3, cuBLASLt 13.1): no algorithm for the per-column alpha with beta = 1 at any
// of the shapes below; the scalar alpha with beta = 1 runs (nn::linear_residual uses it for ungated residuals).
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "probe.cuh"

// out = x + gate[col] * y (the bias already in y): the separate pass, 8 bf16 per thread.
__global__ void gated(const __nv_bfloat16* x, const __nv_bfloat16* y, const float* gate, __nv_bfloat16* out,
                      size_t n8, int cols) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += size_t(gridDim.x) * blockDim.x) {
    uint4 a = reinterpret_cast<const uint4*>(x)[i], b = reinterpret_cast<const uint4*>(y)[i], o;
    const __nv_bfloat16* pa = reinterpret_cast<const __nv_bfloat16*>(&a);
    const __nv_bfloat16* pb = reinterpret_cast<const __nv_bfloat16*>(&b);
    __nv_bfloat16* po = reinterpret_cast<__nv_bfloat16*>(&o);
    const int c0 = static_cast<int>((i * 8) % cols);
    for (int j = 0; j < 8; ++j)
      po[j] = __float2bfloat16(__bfloat162float(pa[j]) + gate[c0 + j] * __bfloat162float(pb[j]));
    reinterpret_cast<uint4*>(out)[i] = o;
  }
}

struct Gemm {
  cublasLtMatmulDesc_t op{};
  cublasLtMatrixLayout_t la{}, lb{}, lc{};
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;
};

// Row-major y[M, N] = x[M, K] w[N, K]^T as column-major D[N, M] = W^T(N x K) X(K x M): "TN".
Gemm make(cublasLtHandle_t h, int M, int N, int K, bool alpha_vector, bool bias, size_t ws) {
  Gemm g;
  CK(cublasLtMatmulDescCreate(&g.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  CK(cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
  CK(cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n));
  if (alpha_vector) {
    int32_t pm = CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST;
    CK(cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_POINTER_MODE, &pm, sizeof pm));
  }
  if (bias) {
    cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_BIAS;
    CK(cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e));
    cudaDataType_t bt = CUDA_R_16BF;
    CK(cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
  }
  CK(cublasLtMatrixLayoutCreate(&g.la, CUDA_R_16BF, K, N, K));
  CK(cublasLtMatrixLayoutCreate(&g.lb, CUDA_R_16BF, K, M, K));
  CK(cublasLtMatrixLayoutCreate(&g.lc, CUDA_R_16BF, N, M, N));
  cublasLtMatmulPreference_t pref;
  CK(cublasLtMatmulPreferenceCreate(&pref));
  CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  cublasLtMatmulHeuristicResult_t r[1];
  int found = 0;
  const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(h, g.op, g.la, g.lb, g.lc, g.lc, pref, 1, r, &found);
  if (s == CUBLAS_STATUS_SUCCESS && found > 0) {
    g.algo = r[0].algo;
    g.ok = true;
  } else {
    std::printf("  no algorithm for %s (status %d, found %d)\n", alpha_vector ? "a per-column alpha" : "a scalar alpha",
                static_cast<int>(s), found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  return g;
}

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 20;
  struct Shape {
    const char* name;
    int M, N, K;
  };
  const Shape shapes[] = {{"ltx2 video attn out", 6144, 4096, 4096}, {"ltx2 video ff out", 6144, 4096, 16384},
                          {"ltx2 a2v out", 6144, 4096, 2048},         {"flux2 single out", 4608, 6144, 24576},
                          {"flux2 double img out", 4096, 6144, 6144}, {"qwen img out", 4096, 3072, 3072}};
  LtProbe lt;
  const cublasLtHandle_t h = lt.handle;
  const size_t ws = lt.workspace;
  void* const work = lt.work;
  std::printf("%s, cuBLASLt %d\n", lt.prop.name, lt.version());
  for (const Shape& s : shapes) {
    const size_t nw = size_t(s.N) * s.K, nx = size_t(s.M) * s.K, ny = size_t(s.M) * s.N;
    __nv_bfloat16 *w, *x, *c, *d, *y, *bias, *gbias;
    float* gate;
    CK(cudaMalloc(&w, nw * 2));
    CK(cudaMalloc(&x, nx * 2));
    CK(cudaMalloc(&c, ny * 2));
    CK(cudaMalloc(&d, ny * 2));
    CK(cudaMalloc(&y, ny * 2));
    CK(cudaMalloc(&bias, s.N * 2));
    CK(cudaMalloc(&gbias, s.N * 2));
    CK(cudaMalloc(&gate, s.N * 4));
    fill<<<1024, 256>>>(w, nw, 1, 0.02f);
    fill<<<1024, 256>>>(x, nx, 2, 1.0f);
    fill<<<1024, 256>>>(c, ny, 3, 1.0f);
    fill<<<64, 256>>>(bias, s.N, 4, 0.1f);
    std::vector<float> hg(s.N);
    std::vector<__nv_bfloat16> hb(s.N), hgb(s.N);
    CK(cudaMemcpy(hb.data(), bias, s.N * 2, cudaMemcpyDeviceToHost));
    for (int j = 0; j < s.N; ++j) {
      hg[j] = 0.5f + 0.001f * (j % 97);
      hgb[j] = __float2bfloat16(hg[j] * __bfloat162float(hb[j]));
    }
    CK(cudaMemcpy(gate, hg.data(), s.N * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(gbias, hgb.data(), s.N * 2, cudaMemcpyHostToDevice));

    const float one = 1.f, zero = 0.f;
    Gemm plain = make(h, s.M, s.N, s.K, false, true, ws);
    Gemm vec = make(h, s.M, s.N, s.K, true, true, ws);
    Gemm scalar_c = make(h, s.M, s.N, s.K, false, true, ws);
    auto run = [&](int which) {
      if (which == 0 || which == 3) {
        CK(cublasLtMatmulDescSetAttribute(plain.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        CK(cublasLtMatmul(h, plain.op, &one, w, plain.la, x, plain.lb, &zero, y, plain.lc, y, plain.lc, &plain.algo,
                          work, ws, 0));
        if (which == 3) gated<<<lt.prop.multiProcessorCount * 8, 256>>>(c, y, gate, d, ny / 8, s.N);
      } else if (which == 1) {
        CK(cublasLtMatmulDescSetAttribute(vec.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &gbias, sizeof gbias));
        CK(cublasLtMatmul(h, vec.op, gate, w, vec.la, x, vec.lb, &one, c, vec.lc, d, vec.lc, &vec.algo, work, ws, 0));
      } else {
        CK(cublasLtMatmulDescSetAttribute(scalar_c.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        CK(cublasLtMatmul(h, scalar_c.op, &one, w, scalar_c.la, x, scalar_c.lb, &one, c, scalar_c.lc, d, scalar_c.lc,
                          &scalar_c.algo, work, ws, 0));
      }
    };
    auto time = [&](int which) { return lt.timer.ms([&] { run(which); }, reps); };
    const double flop = 2.0 * s.M * s.N * double(s.K);
    std::printf("%s [M %d, N %d, K %d]\n", s.name, s.M, s.N, s.K);
    if (!plain.ok || !scalar_c.ok) continue;
    const float t0 = time(0), t3 = time(3), t2 = time(2);
    if (!vec.ok) {  // what runs without it: the ungated residual in the epilogue (nn::linear_residual)
      std::printf("  gemm+bias %.3f ms (%.0f TFLOP/s) | + separate gated residual %.3f ms | scalar alpha, beta 1 "
                  "(C = x) %.3f ms\n",
                  t0, 2.0 * s.M * s.N * double(s.K) / t0 / 1e9, t3, t2);
      continue;
    }
    const float t1 = time(1);
    std::printf("  gemm+bias %.3f ms (%.0f TFLOP/s) | + separate gated residual %.3f ms | fused alpha-vector %.3f ms "
                "| scalar alpha, beta 1 %.3f ms | fused saves %.3f ms\n",
                t0, flop / t0 / 1e9, t3, t1, t2, t3 - t1);
    // Check the fused result against the separate one (both from the same GEMM inputs) on a sample.
    run(1);
    std::vector<__nv_bfloat16> hd(ny), hr(ny);
    CK(cudaMemcpy(hd.data(), d, ny * 2, cudaMemcpyDeviceToHost));
    run(3);
    CK(cudaMemcpy(hr.data(), d, ny * 2, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    for (size_t i = 0; i < ny; i += 97) {
      const double a = __bfloat162float(hd[i]), b = __bfloat162float(hr[i]);
      num += (a - b) * (a - b);
      den += b * b;
    }
    std::printf("  fused vs separate: relative RMS %.2e\n", std::sqrt(num / den));
    for (void* p : {(void*)w, (void*)x, (void*)c, (void*)d, (void*)y, (void*)bias, (void*)gbias, (void*)gate}) cudaFree(p);
  }
  return 0;
}
