// Probe: what do FP8 GEMMs (e4m3 x e4m3 -> bf16, fp32 accumulation) cost at the models' shapes, by scale
// mode and accumulation? --fp8 runs at::_scaled_mm with one scale per activation row and one per weight row
// (cuBLASLt's outer-vector mode, regular promotion of the partial sums); this times, per shape, every
// candidate the heuristic offers (up to 16, 32 MiB workspace) in four configurations: outer-vector or scalar
// scales, promoted or fast accumulation. Prints the first choice and the fastest candidate of each.
// Build: nvcc -O2 -std=c++17 -arch=sm_90a cublaslt_fp8.cu -lcublasLt -o probe_fp8; run: ./probe_fp8 [reps]
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "probe.cuh"

struct Shape {
  const char* name;
  int M, N, K;
};

__global__ void fill_scale(float* p, int n, float v) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) p[i] = v;
}

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 20;
  const Shape shapes[] = {
      {"flux2 single qkv+mlp", 4608, 55296, 6144},
      {"flux2 single out", 4608, 6144, 24576},
      {"flux2 img qkv", 4096, 18432, 6144},
      {"flux2 img out", 4096, 6144, 6144},
      {"flux2 img ff up", 4096, 36864, 6144},
      {"flux2 img ff down", 4096, 6144, 18432},
      {"flux2 txt ff up", 512, 36864, 6144},
      {"ltx2 video q/k/v/out (B2)", 12288, 4096, 4096},
      {"ltx2 video ff up (B2)", 12288, 16384, 4096},
      {"ltx2 video ff down (B2)", 12288, 4096, 16384},
      {"ltx2 video ff down (B1)", 6144, 4096, 16384},
      {"qwen img ff up", 4096, 12288, 3072},
  };
  LtProbe lt;
  const cublasLtHandle_t h = lt.handle;
  const size_t ws = lt.workspace;
  void* const work = lt.work;
  std::printf("%s, cuBLASLt %d, %d reps\n", lt.prop.name, lt.version(), reps);
  const char* config_names[4] = {"outer-vector scales, promoted", "outer-vector scales, fast accum",
                                 "scalar scales, promoted", "scalar scales, fast accum"};
  double total_first[4] = {}, total_best[4] = {};
  for (const Shape& s : shapes) {
    const size_t nw = size_t(s.N) * s.K, nx = size_t(s.M) * s.K, ny = size_t(s.M) * s.N;
    __nv_fp8_e4m3 *w, *x;
    __nv_bfloat16* y;
    float *sw, *sx;
    CK(cudaMalloc(&w, nw));
    CK(cudaMalloc(&x, nx));
    CK(cudaMalloc(&y, ny * 2));
    CK(cudaMalloc(&sw, s.N * 4));
    CK(cudaMalloc(&sx, s.M * 4));
    fill<<<1024, 256>>>(w, nw, 1, 400.f);
    fill<<<1024, 256>>>(x, nx, 2, 400.f);
    fill_scale<<<64, 256>>>(sw, s.N, 1e-4f);
    fill_scale<<<64, 256>>>(sx, s.M, 1e-2f);
    const double flop = 2.0 * s.M * s.N * double(s.K);
    std::printf("%s [M %d, N %d, K %d]\n", s.name, s.M, s.N, s.K);
    for (int c = 0; c < 4; ++c) {
      const bool outer = c < 2;
      const int8_t fast = c % 2;
      cublasLtMatmulDesc_t op;
      CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
      CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
      CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n));
      CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast));
      const cublasLtMatmulMatrixScale_t mode =
          outer ? CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F : CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
      CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof mode));
      CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof mode));
      CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sw, sizeof sw));
      CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sx, sizeof sx));
      cublasLtMatrixLayout_t la, lb, lc;
      CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, s.K, s.N, s.K));
      CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, s.K, s.M, s.K));
      CK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, s.N, s.M, s.N));
      cublasLtMatmulPreference_t pref;
      CK(cublasLtMatmulPreferenceCreate(&pref));
      CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
      cublasLtMatmulHeuristicResult_t r[16];
      int found = 0;
      const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, lc, lc, pref, 16, r, &found);
      cublasLtMatmulPreferenceDestroy(pref);
      const float one = 1.f, zero = 0.f;
      auto run = [&](int i) {
        return cublasLtMatmul(h, op, &one, w, la, x, lb, &zero, y, lc, y, lc, &r[i].algo, work, ws, 0);
      };
      float t_first = -1, t_best = 1e30f;
      int best = -1, tile_first = 0, tile_best = 0;
      for (int i = 0; hs == CUBLAS_STATUS_SUCCESS && i < found; ++i) {
        if (run(i) != CUBLAS_STATUS_SUCCESS) continue;
        const float ms = lt.timer.ms([&] { run(i); }, reps);
        int tile = 0;
        cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, nullptr);
        if (t_first < 0) t_first = ms, tile_first = tile;
        if (ms < t_best) t_best = ms, best = i, tile_best = tile;
      }
      if (best < 0) {
        std::printf("  %-32s: no candidate runs (heuristic status %d, %d found)\n", config_names[c],
                    static_cast<int>(hs), found);
      } else {
        std::printf("  %-32s: %2d candidates, first %.4f ms %4.0f TFLOP/s (tile %d), best #%d %.4f ms %4.0f TFLOP/s "
                    "(tile %d): %.1f %% faster\n",
                    config_names[c], found, t_first, flop / t_first / 1e9, tile_first, best, t_best,
                    flop / t_best / 1e9, tile_best, 100.0 * (t_first - t_best) / t_first);
        total_first[c] += t_first;
        total_best[c] += t_best;
      }
      cublasLtMatrixLayoutDestroy(la);
      cublasLtMatrixLayoutDestroy(lb);
      cublasLtMatrixLayoutDestroy(lc);
      cublasLtMatmulDescDestroy(op);
    }
    for (void* p : {(void*)w, (void*)x, (void*)y, (void*)sw, (void*)sx}) cudaFree(p);
  }
  for (int c = 0; c < 4; ++c)
    std::printf("all shapes once, %s: first choices %.3f ms, best %.3f ms\n", config_names[c], total_first[c],
                total_best[c]);
  return 0;
}
