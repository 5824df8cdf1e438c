// Probe: how far is cuBLASLt's first heuristic choice from the fastest of its candidates, at the models' GEMM
// shapes? Times, per shape, every algorithm the heuristic offers (up to 16, bias or GELU + bias epilogue, 32 MiB
// workspace, bf16 in and out, fp32 accumulation) and prints each one's time, rate and whether its output equals
// the first choice's bit for bit (tile shapes that keep the order of the K sum give the same bits).
// Build: nvcc -O2 -std=c++17 -arch=sm_90a cublaslt_algos.cu -lcublasLt -o probe_algos; run: ./probe_algos [reps]
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "probe.cuh"

struct Shape {
  const char* name;
  int M, N, K;
  bool gelu;
};

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 20;
  const Shape shapes[] = {
      {"ltx2 video q/k/v/out (B1)", 6144, 4096, 4096, false},
      {"ltx2 video q/k/v/out (B2)", 12288, 4096, 4096, false},
      {"ltx2 video ff up (B1)", 6144, 16384, 4096, true},
      {"ltx2 video ff up (B2)", 12288, 16384, 4096, true},
      {"ltx2 video ff down (B1)", 6144, 4096, 16384, false},
      {"ltx2 video ff down (B2)", 12288, 4096, 16384, false},
      {"ltx2 video -> audio k/v (B1)", 6144, 2048, 4096, false},
      {"ltx2 a2v out (B1)", 6144, 4096, 2048, false},
      {"ltx2 audio q/k/v (B1)", 126, 2048, 2048, false},
      {"ltx2 audio q/k/v (B2)", 252, 2048, 2048, false},
      {"flux2 single qkv+mlp", 4608, 55296, 6144, false},
      {"flux2 single out", 4608, 6144, 24576, false},
      {"flux2 img ff up", 4096, 36864, 6144, false},
      {"flux2 img ff down", 4096, 6144, 18432, false},
      {"qwen img qkv", 4096, 3072, 3072, false},
      {"qwen img ff up", 4096, 12288, 3072, true},
  };
  LtProbe lt;
  const cublasLtHandle_t h = lt.handle;
  const size_t ws = lt.workspace;
  void* const work = lt.work;
  std::printf("%s, cuBLASLt %d, %d reps\n", lt.prop.name, lt.version(), reps);
  double total_first = 0, total_best = 0;
  for (const Shape& s : shapes) {
    const size_t nw = size_t(s.N) * s.K, nx = size_t(s.M) * s.K, ny = size_t(s.M) * s.N;
    __nv_bfloat16 *w, *x, *y, *bias;
    CK(cudaMalloc(&w, nw * 2));
    CK(cudaMalloc(&x, nx * 2));
    CK(cudaMalloc(&y, ny * 2));
    CK(cudaMalloc(&bias, s.N * 2));
    fill<<<1024, 256>>>(w, nw, 1, 0.02f);
    fill<<<1024, 256>>>(x, nx, 2, 1.0f);
    fill<<<64, 256>>>(bias, s.N, 4, 0.1f);

    cublasLtMatmulDesc_t op;
    CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n));
    const cublasLtEpilogue_t e = s.gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e));
    const cudaDataType_t bt = CUDA_R_16BF;
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    cublasLtMatrixLayout_t la, lb, lc;
    CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, s.K, s.N, s.K));
    CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, s.K, s.M, s.K));
    CK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, s.N, s.M, s.N));
    cublasLtMatmulPreference_t pref;
    CK(cublasLtMatmulPreferenceCreate(&pref));
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    cublasLtMatmulHeuristicResult_t r[16];
    int found = 0;
    CK(cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, lc, lc, pref, 16, r, &found));
    cublasLtMatmulPreferenceDestroy(pref);
    const float one = 1.f, zero = 0.f;
    auto run = [&](int i) {
      return cublasLtMatmul(h, op, &one, w, la, x, lb, &zero, y, lc, y, lc, &r[i].algo, work, ws, 0);
    };
    const double flop = 2.0 * s.M * s.N * double(s.K);
    std::printf("%s [M %d, N %d, K %d]%s: %d candidates\n", s.name, s.M, s.N, s.K, s.gelu ? " gelu" : "", found);
    std::vector<__nv_bfloat16> first(ny), other(ny);
    float t_first = 0, t_best = 1e30f;
    int best = -1;
    for (int i = 0; i < found; ++i) {
      if (run(i) != CUBLAS_STATUS_SUCCESS) {
        std::printf("  #%d: does not run\n", i);
        continue;
      }
      const float ms = lt.timer.ms([&] { run(i); }, reps);
      CK(cudaMemcpy(i == 0 ? first.data() : other.data(), y, ny * 2, cudaMemcpyDeviceToHost));
      const bool same = i == 0 || std::memcmp(first.data(), other.data(), ny * 2) == 0;
      int tile = 0, splitk = 0;
      cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, nullptr);
      cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk,
                                           nullptr);
      std::printf("  #%d: %.4f ms %.0f TFLOP/s, tile %d, split-K %d, waves %.2f, workspace %zu%s\n", i, ms,
                  flop / ms / 1e9, tile, splitk, r[i].wavesCount, r[i].workspaceSize, same ? "" : ", other bits");
      if (i == 0) t_first = ms;
      if (ms < t_best) t_best = ms, best = i;
    }
    if (best >= 0)
      std::printf("  first %.4f ms, best #%d %.4f ms: %.1f %% faster\n", t_first, best, t_best,
                  100.0 * (t_first - t_best) / t_first);
    total_first += t_first;
    total_best += t_best;
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
    for (void* p : {(void*)w, (void*)x, (void*)y, (void*)bias}) cudaFree(p);
  }
  std::printf("all shapes once: first choices %.3f ms, best %.3f ms\n", total_first, total_best);
  return 0;
}
