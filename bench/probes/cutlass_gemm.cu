// Probe: can CUTLASS's Hopper GEMMs (warp-specialised, TMA) do better than cuBLASLt at the models' shapes, and
// does a SwiGLU moved into a GEMM's epilogue pay? Times, per shape, cuBLASLt's first heuristic choice without a
// workspace (what nn::linear runs) against CUTLASS kernels of a few tile / cluster / schedule configurations and
// tile rasterisations. Then FLUX.2's SwiGLU MLP input: today one GEMM writes [gate | up] and a pass computes
// silu(gate) * up; fused, cuBLASLt writes the gate alone and a CUTLASS GEMM computes up and, in its epilogue,
// silu(gate) * up from the gate it loads (the same rounding: both operands rounded to bf16 first).
// Then a gated residual, x + gate * (a w^T + bias), in the epilogue against cuBLASLt's bias epilogue and a pass.
// Build: nvcc -O3 -std=c++17 -arch=sm_90a --expt-relaxed-constexpr -I<cutlass>/include cutlass_gemm.cu \
//          -lcublasLt -o probe     (scripts/gpu_check.sh profile, row cutlass_gemm)
// Result (2026-12-07, H100 80GB HBM3, cuBLASLt 13.1, CUTLASS 4.7.0; bench/results/2026-12-07d_h100_cutlass): the
// best CUTLASS configuration (cooperative 128x256, cluster 1x2) is 7-17 % slower than cuBLASLt at every shape, with
// bit-identical results; the fused SwiGLU is 0.99-1.3x today's GEMM + pass, the fused residual 0.93-1.04x before
// the extra read of x LTX-2's norms would need. Neither goes into ditgen.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/version.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/kernel/tile_scheduler_params.h"
#include "probe.cuh"

using namespace cute;
using bf16 = cutlass::bfloat16_t;

// silu(gate) * up as ditgen's swiglu8 rounds it: up (the accumulator) and silu(gate) each to bf16 first.
template <class T>
struct SiluGateMul {
  CUTLASS_HOST_DEVICE T operator()(T const& up, T const& gate) const {
    const float g = static_cast<float>(gate);
    const float s = static_cast<float>(bf16(g / (1.f + expf(-g))));
    return T(s * static_cast<float>(bf16(static_cast<float>(up))));
  }
};
template <int N>
struct SiluGateMul<cutlass::Array<float, N>> {
  CUTLASS_HOST_DEVICE cutlass::Array<float, N> operator()(cutlass::Array<float, N> const& up,
                                                          cutlass::Array<float, N> const& gate) const {
    cutlass::Array<float, N> out;
    SiluGateMul<float> op;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) out[i] = op(up[i], gate[i]);
    return out;
  }
};

using StrideRow = cute::Stride<int64_t, cute::Int<1>, int64_t>;  // row-major [M, N] with a leading dimension
using Raster = cutlass::gemm::kernel::detail::PersistentTileSchedulerSm90Params::RasterOrderOptions;

// One CUTLASS Hopper GEMM: y[M, N] = Fusion(x[M, K] w[N, K]^T, C), bf16 in and out, fp32 accumulation, C (ElementC;
// void: none) and y row-major.
template <class Tile, class Cluster, class KernelSchedule, class EpilogueSchedule, class Fusion, class ElementC>
struct Cutlass {
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, ElementC, cutlass::layout::RowMajor, 8, bf16,
      cutlass::layout::RowMajor, 8, EpilogueSchedule, Fusion>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, bf16, cutlass::layout::RowMajor, 8, bf16,
      cutlass::layout::ColumnMajor, 8, float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  Gemm gemm;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  // The arguments of x w^T into y (row stride ldy) with C = c (row stride ldy too; null: none), the epilogue's
  // own arguments left for the caller.
  static typename Gemm::Arguments arguments(const bf16* x, const bf16* w, const bf16* c, bf16* y, int64_t ldy, int M,
                                            int N, int K, int swizzle, Raster raster) {
    typename Kernel::StrideA sa{};  // x: K-major rows
    cute::get<0>(sa) = K;
    cute::get<2>(sa) = int64_t(M) * K;
    typename Kernel::StrideB sb{};  // w [N, K]: K-major too
    cute::get<0>(sb) = K;
    cute::get<2>(sb) = int64_t(N) * K;
    typename Kernel::StrideD sd{};
    cute::get<0>(sd) = ldy;
    cute::get<2>(sd) = ldy * M;
    typename Kernel::StrideC sc{};
    cute::get<0>(sc) = ldy;
    cute::get<2>(sc) = ldy * M;
    cutlass::KernelHardwareInfo hw;
    hw.device_id = 0;
    hw.sm_count = cutlass::KernelHardwareInfo::query_device_multiprocessor_count(0);
    typename Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm, {M, N, K, 1}, {x, sa, w, sb},
                                  {{}, c, sc, y, sd}, hw};
    args.scheduler.max_swizzle_size = swizzle;
    args.scheduler.raster_order = raster;
    return args;
  }
  // False if CUTLASS refuses the arguments.
  bool initialize(const typename Gemm::Arguments& args) {
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) return false;
    const size_t need = Gemm::get_workspace_size(args);
    if (need > workspace_bytes) {
      if (workspace) cudaFree(workspace);
      CK(cudaMalloc(&workspace, need));
      workspace_bytes = need;
    }
    return gemm.initialize(args, workspace) == cutlass::Status::kSuccess;
  }
  void run() { CK(static_cast<int>(gemm.run())); }
};

// y = silu(aux) * (x w^T), aux [M, N] bf16 read in the epilogue (the builder's descriptors give its tile loads).
template <class Tile, class EpilogueSchedule>
struct SwiGLUFusion {
  using EpiDesc = cutlass::epilogue::collective::detail::EpilogueDescriptor<
      Tile, cutlass::epilogue::collective::EpilogueTileAuto, void, bf16, EpilogueSchedule>;
  using AuxDesc = cutlass::epilogue::collective::detail::AuxLoadDescriptor<EpiDesc, cutlass::layout::RowMajor, bf16>;
  using AuxLoad = cutlass::epilogue::fusion::Sm90AuxLoad<AuxDesc::Stages, typename EpiDesc::EpilogueTile, bf16,
                                                         typename AuxDesc::Stride, typename AuxDesc::SmemLayoutAtom,
                                                         typename AuxDesc::CopyOpS2R>;
  using type = cutlass::epilogue::fusion::Sm90EVT<
      cutlass::epilogue::fusion::Sm90Compute<SiluGateMul, bf16, float, cutlass::FloatRoundStyle::round_to_nearest>,
      cutlass::epilogue::fusion::Sm90AccFetch, AuxLoad>;
};

// y = x w^T, or with SwiGLU y = silu(aux) * (x w^T).
template <class Tile, class Cluster, class KernelSchedule, class EpilogueSchedule, bool SwiGLU>
struct Config : Cutlass<Tile, Cluster, KernelSchedule, EpilogueSchedule,
                        std::conditional_t<SwiGLU, typename SwiGLUFusion<Tile, EpilogueSchedule>::type,
                                           cutlass::epilogue::fusion::ScaledAcc<bf16, float, float>>,
                        void> {
  // y's row stride ldy, aux's ldaux (SwiGLU only). False if CUTLASS refuses.
  bool init(const bf16* x, const bf16* w, bf16* y, int64_t ldy, const bf16* aux, int64_t ldaux, int M, int N, int K,
            int swizzle, Raster raster) {
    auto args = this->arguments(x, w, nullptr, y, ldy, M, N, K, swizzle, raster);
    if constexpr (SwiGLU)
      args.epilogue.thread = {{}, {aux, bf16(0), StrideRow{ldaux, cute::Int<1>{}, ldaux * M}}, {}};
    else
      args.epilogue.thread.alpha = 1.f;
    return this->initialize(args);
  }
};

// out = x + gate[col] * bf16(a w^T + bias[col]) with x the GEMM's C operand: a DiT block's gated residual in the
// epilogue (the product rounded to bf16 first, as the separate pass reads it).
template <class Tile>
using GatedResidualFusion = cutlass::epilogue::fusion::Sm90EVT<
    cutlass::epilogue::fusion::Sm90Compute<cutlass::multiply_add, bf16, float,
                                           cutlass::FloatRoundStyle::round_to_nearest>,  // gate * y + x
    cutlass::epilogue::fusion::Sm90RowBroadcast<0, Tile, bf16, float, cute::Stride<_0, _1, int64_t>>,  // gate
    cutlass::epilogue::fusion::Sm90EVT<
        cutlass::epilogue::fusion::Sm90Compute<cutlass::plus, bf16, float, cutlass::FloatRoundStyle::round_to_nearest>,
        cutlass::epilogue::fusion::Sm90AccFetch,
        cutlass::epilogue::fusion::Sm90RowBroadcast<0, Tile, bf16, float, cute::Stride<_0, _1, int64_t>>>,  // y
    cutlass::epilogue::fusion::Sm90SrcFetch<bf16>>;                                                       // x

template <class Tile, class Cluster, class KernelSchedule, class EpilogueSchedule>
struct ResidualConfig : Cutlass<Tile, Cluster, KernelSchedule, EpilogueSchedule, GatedResidualFusion<Tile>, bf16> {
  bool init(const bf16* a, const bf16* w, const bf16* x, bf16* out, const bf16* gate, const bf16* bias, int M, int N,
            int K, int swizzle, Raster raster) {
    auto args = this->arguments(a, w, x, out, N, M, N, K, swizzle, raster);
    const cute::Stride<_0, _1, int64_t> row{};
    args.epilogue.thread = {{gate, bf16(0), row}, {{}, {bias, bf16(0), row}, {}}, {}, {}};
    return this->initialize(args);
  }
};

using Coop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using CoopEpi = cutlass::epilogue::TmaWarpSpecializedCooperative;
using Ping = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using PingEpi = cutlass::epilogue::TmaWarpSpecialized;

template <bool S>
using C256x128 = Config<Shape<_256, _128, _64>, Shape<_2, _1, _1>, Coop, CoopEpi, S>;
template <bool S>
using C128x256 = Config<Shape<_128, _256, _64>, Shape<_1, _2, _1>, Coop, CoopEpi, S>;
template <bool S>
using P128x128 = Config<Shape<_128, _128, _64>, Shape<_2, _1, _1>, Ping, PingEpi, S>;
using R256x128 = ResidualConfig<Shape<_256, _128, _64>, Shape<_2, _1, _1>, Coop, CoopEpi>;
using R128x256 = ResidualConfig<Shape<_128, _256, _64>, Shape<_1, _2, _1>, Coop, CoopEpi>;

// cuBLASLt's first heuristic choice for row-major y[M, N] = x[M, K] w[N, K]^T without a workspace.
struct Lt {
  cublasLtMatmulDesc_t op{};
  cublasLtMatrixLayout_t la{}, lb{}, lc{};
  cublasLtMatmulAlgo_t algo{};
  Lt(cublasLtHandle_t h, int M, int N, int K, int64_t ldy) {
    CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n));
    CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, K, N, K));
    CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, K, M, K));
    CK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, N, M, ldy));
    cublasLtMatmulPreference_t pref;
    CK(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = 0;
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    cublasLtMatmulHeuristicResult_t r[1];
    int found = 0;
    CK(cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, lc, lc, pref, 1, r, &found));
    CK(found > 0 ? 0 : 1);
    algo = r[0].algo;
    cublasLtMatmulPreferenceDestroy(pref);
  }
  void set_bias(const void* bias) {  // the bias epilogue (bf16 [N]) from now on
    cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_BIAS;
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e));
    cudaDataType_t bt = CUDA_R_16BF;
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  }
  void run(cublasLtHandle_t h, const void* x, const void* w, void* y) {
    const float one = 1.f, zero = 0.f;
    CK(cublasLtMatmul(h, op, &one, w, la, x, lb, &zero, y, lc, y, lc, &algo, nullptr, 0, 0));
  }
};

// out = x + gate[col] * y (y already holds the bias), 8 bf16 a thread: today's separate residual pass.
__global__ void gated_residual(const __nv_bfloat16* x, const __nv_bfloat16* y, const __nv_bfloat16* gate,
                               __nv_bfloat16* out, int64_t n, int N) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n / 8; i += int64_t(gridDim.x) * blockDim.x) {
    const uint4 a = reinterpret_cast<const uint4*>(x)[i], b = reinterpret_cast<const uint4*>(y)[i];
    const uint4 g = *reinterpret_cast<const uint4*>(gate + i * 8 % N);
    const __nv_bfloat16 *pa = reinterpret_cast<const __nv_bfloat16*>(&a), *pb = reinterpret_cast<const __nv_bfloat16*>(&b),
                        *pg = reinterpret_cast<const __nv_bfloat16*>(&g);
    uint4 o;
    __nv_bfloat16* po = reinterpret_cast<__nv_bfloat16*>(&o);
    for (int j = 0; j < 8; ++j)
      po[j] = __float2bfloat16(__bfloat162float(pa[j]) + __bfloat162float(pg[j]) * __bfloat162float(pb[j]));
    reinterpret_cast<uint4*>(out)[i] = o;
  }
}

// out[r, :F] = silu(gu[r, :F]) * gu[r, F:] (rounded as swiglu8), 8 bf16 a thread: the separate pass of today.
__global__ void swiglu(const __nv_bfloat16* gu, __nv_bfloat16* out, int64_t rows, int F) {
  const int64_t n8 = rows * F / 8;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n8; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i * 8 / F, c = i * 8 % F;
    const uint4 g = *reinterpret_cast<const uint4*>(gu + r * 2 * F + c);
    const uint4 u = *reinterpret_cast<const uint4*>(gu + r * 2 * F + F + c);
    const __nv_bfloat16* gp = reinterpret_cast<const __nv_bfloat16*>(&g);
    const __nv_bfloat16* up = reinterpret_cast<const __nv_bfloat16*>(&u);
    uint4 o;
    __nv_bfloat16* op = reinterpret_cast<__nv_bfloat16*>(&o);
    for (int j = 0; j < 8; ++j) {
      const float x = __bfloat162float(gp[j]);
      const float s = __bfloat162float(__float2bfloat16(x / (1.f + expf(-x))));
      op[j] = __float2bfloat16(s * __bfloat162float(up[j]));
    }
    *reinterpret_cast<uint4*>(out + r * F + c) = o;
  }
}

template <class T>
T* dalloc(size_t n) {
  T* p;
  CK(cudaMalloc(&p, n * sizeof(T)));
  return p;
}

// Largest |a - b| and how many elements differ, over n bf16 values on the device.
void compare(const char* what, const void* a, const void* b, size_t n) {
  std::vector<__nv_bfloat16> ha(n), hb(n);
  CK(cudaMemcpy(ha.data(), a, n * 2, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(hb.data(), b, n * 2, cudaMemcpyDeviceToHost));
  double worst = 0, scale = 0;
  size_t differ = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = __bfloat162float(ha[i]), y = __bfloat162float(hb[i]);
    worst = std::fmax(worst, std::fabs(x - y));
    scale = std::fmax(scale, std::fabs(y));
    differ += x != y;
  }
  std::printf("    %s: max |diff| %.3g (max |value| %.3g), %.4f %% of elements differ\n", what, worst, scale,
              100.0 * differ / n);
}

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 10;
  LtProbe lt;
  std::printf("%s, cuBLASLt %d, CUTLASS %d.%d.%d\n", lt.prop.name, lt.version(), CUTLASS_MAJOR, CUTLASS_MINOR,
              CUTLASS_PATCH);
  struct Shape3 {
    const char* name;
    int M, N, K;
  };
  const Shape3 shapes[] = {
      {"flux2 single linear1 (qkv + mlp in)", 4608, 55296, 6144}, {"flux2 single linear2", 4608, 6144, 24576},
      {"flux2 double img mlp in", 4096, 36864, 6144},             {"flux2 double img mlp out", 4096, 6144, 18432},
      {"flux2 double txt mlp in", 512, 36864, 6144},              {"ltx2 video attn proj (CFG x2)", 12288, 4096, 4096},
      {"ltx2 video ff in", 12288, 16384, 4096},                   {"ltx2 video ff out", 12288, 4096, 16384},
      {"qwen img mlp in", 4096, 12288, 3072},                     {"qwen img attn proj", 4096, 3072, 3072}};
  size_t max_x = 0, max_w = 0, max_y = 0;
  for (const Shape3& s : shapes) {
    max_x = std::max(max_x, size_t(s.M) * s.K);
    max_w = std::max(max_w, size_t(s.N) * s.K);
    max_y = std::max(max_y, size_t(s.M) * s.N);
  }
  bf16* x = dalloc<bf16>(max_x);
  bf16* w = dalloc<bf16>(max_w);
  bf16* y0 = dalloc<bf16>(max_y);
  bf16* y1 = dalloc<bf16>(max_y);
  fill<<<1024, 256>>>(reinterpret_cast<__nv_bfloat16*>(x), max_x, 1, 1.0f);
  fill<<<1024, 256>>>(reinterpret_cast<__nv_bfloat16*>(w), max_w, 2, 0.02f);
  CK(cudaDeviceSynchronize());

  C256x128<false> c1;
  C128x256<false> c2;
  P128x128<false> c3;
  const Raster rasters[] = {Raster::AlongM, Raster::AlongN};
  for (const Shape3& s : shapes) {
    const double flop = 2.0 * s.M * double(s.N) * s.K;
    Lt ref(lt.handle, s.M, s.N, s.K, s.N);
    auto t_ref = [&] { return lt.timer.ms([&] { ref.run(lt.handle, x, w, y0); }, reps); };
    const float before = t_ref();
    std::printf("%s [M %d, N %d, K %d]\n  cuBLASLt %.3f ms (%.0f TFLOP/s)\n", s.name, s.M, s.N, s.K, before,
                flop / before / 1e9);
    float best = 1e30f;
    const char* best_name = "";
    auto try_config = [&](auto& cfg, const char* name) {
      for (int swizzle : {1, 2, 4, 8})
        for (Raster r : rasters) {
          if (!cfg.init(x, w, y1, s.N, nullptr, 0, s.M, s.N, s.K, swizzle, r)) {
            std::printf("  %s: refused\n", name);
            return;
          }
          const float t = lt.timer.ms([&] { cfg.run(); }, reps);
          std::printf("  %s swizzle %d raster %s: %.3f ms (%.0f TFLOP/s)\n", name, swizzle,
                      r == Raster::AlongM ? "M" : "N", t, flop / t / 1e9);
          if (t < best) best = t, best_name = name;
        }
      cfg.run();
      compare("against cuBLASLt", y1, y0, size_t(s.M) * s.N);
    };
    try_config(c1, "coop 256x128 cluster 2x1");
    try_config(c2, "coop 128x256 cluster 1x2");
    try_config(c3, "pingpong 128x128 cluster 2x1");
    const float after = t_ref();
    std::printf("  cuBLASLt again %.3f ms | best CUTLASS (%s) %.3f ms: %.3f of cuBLASLt\n", after, best_name, best,
                best / std::min(before, after));
  }

  // The SwiGLU input of FLUX.2's MLPs: [M, 2F] then a pass, against the gate GEMM then the fused up GEMM.
  C256x128<true> f1;
  C128x256<true> f2;
  P128x128<true> f3;
  const Shape3 mlps[] = {{"flux2 single mlp", 4608, 18432, 6144},
                         {"flux2 double img mlp", 4096, 18432, 6144},
                         {"flux2 double txt mlp", 512, 18432, 6144}};
  for (const Shape3& s : mlps) {
    const int M = s.M, F = s.N, K = s.K;
    bf16* gu = y0;                         // [M, 2F]: gate then up
    bf16* out0 = dalloc<bf16>(size_t(M) * F);
    bf16* gate = y1;                       // [M, F]
    bf16* out1 = dalloc<bf16>(size_t(M) * F);
    Lt both(lt.handle, M, 2 * F, K, 2 * F);
    Lt gate_only(lt.handle, M, F, K, F);
    const bf16* w_up = w + size_t(F) * K;  // rows F..2F of w: the up half
    auto unfused = [&] {
      both.run(lt.handle, x, w, gu);
      swiglu<<<lt.prop.multiProcessorCount * 16, 256>>>(reinterpret_cast<const __nv_bfloat16*>(gu),
                                                         reinterpret_cast<__nv_bfloat16*>(out0), M, F);
    };
    const float t_gemm = lt.timer.ms([&] { both.run(lt.handle, x, w, gu); }, reps);
    const float t_unfused = lt.timer.ms(unfused, reps);
    std::printf("%s [M %d, F %d, K %d]\n  today: GEMM [M, 2F] %.3f ms + SwiGLU pass = %.3f ms\n", s.name, M, F, K,
                t_gemm, t_unfused);
    unfused();
    auto try_fused = [&](auto& cfg, const char* name) {
      float best = 1e30f;
      for (int swizzle : {1, 4})
        for (Raster r : rasters) {
          if (!cfg.init(x, w_up, out1, F, gate, F, M, F, K, swizzle, r)) {
            std::printf("  %s: refused\n", name);
            return;
          }
          const float t = lt.timer.ms(
              [&] {
                gate_only.run(lt.handle, x, w, gate);
                cfg.run();
              },
              reps);
          std::printf("  fused %s swizzle %d raster %s: %.3f ms (%.3f of today)\n", name, swizzle,
                      r == Raster::AlongM ? "M" : "N", t, t / t_unfused);
          best = std::min(best, t);
        }
      gate_only.run(lt.handle, x, w, gate);
      cfg.run();
      compare("fused against today", out1, out0, size_t(M) * F);
    };
    try_fused(f1, "coop 256x128 cluster 2x1");
    try_fused(f2, "coop 128x256 cluster 1x2");
    try_fused(f3, "pingpong 128x128 cluster 2x1");
    std::printf("  today again: %.3f ms\n", lt.timer.ms(unfused, reps));
    cudaFree(out0);
    cudaFree(out1);
  }

  // The gated residual of a block's output projection in the GEMM's epilogue, against cuBLASLt's GEMM with its bias
  // epilogue and the separate pass. (In LTX-2 that pass also makes the next RMS norms: fused, the norms would read
  // the updated x once more, so the fused path must save more than one read of x to pay there.)
  R256x128 r1;
  R128x256 r2;
  const Shape3 outs[] = {{"ltx2 video attn out (CFG x2)", 12288, 4096, 4096},
                         {"ltx2 video ff out (CFG x2)", 12288, 4096, 16384},
                         {"flux2 single linear2", 4608, 6144, 24576},
                         {"qwen img out", 4096, 3072, 3072}};
  for (const Shape3& s : outs) {
    const size_t ny = size_t(s.M) * s.N;
    bf16* xres = dalloc<bf16>(ny);
    bf16* out0 = dalloc<bf16>(ny);
    bf16* out1 = dalloc<bf16>(ny);
    bf16* gate = dalloc<bf16>(s.N);
    bf16* bias = dalloc<bf16>(s.N);
    fill<<<1024, 256>>>(reinterpret_cast<__nv_bfloat16*>(xres), ny, 3, 2.0f);
    fill<<<64, 256>>>(reinterpret_cast<__nv_bfloat16*>(gate), s.N, 4, 1.0f);
    fill<<<64, 256>>>(reinterpret_cast<__nv_bfloat16*>(bias), s.N, 5, 0.1f);
    Lt g(lt.handle, s.M, s.N, s.K, s.N);
    g.set_bias(bias);
    auto today = [&] {
      g.run(lt.handle, x, w, y0);
      gated_residual<<<lt.prop.multiProcessorCount * 16, 256>>>(
          reinterpret_cast<const __nv_bfloat16*>(xres), reinterpret_cast<const __nv_bfloat16*>(y0),
          reinterpret_cast<const __nv_bfloat16*>(gate), reinterpret_cast<__nv_bfloat16*>(out0), int64_t(ny), s.N);
    };
    const float t_gemm = lt.timer.ms([&] { g.run(lt.handle, x, w, y0); }, reps);
    const float t_today = lt.timer.ms(today, reps);
    std::printf("%s residual [M %d, N %d, K %d]\n  today: GEMM + bias %.3f ms + residual pass = %.3f ms\n", s.name, s.M,
                s.N, s.K, t_gemm, t_today);
    today();
    auto try_res = [&](auto& cfg, const char* name) {
      for (int swizzle : {1, 4})
        for (Raster r : rasters) {
          if (!cfg.init(x, w, xres, out1, gate, bias, s.M, s.N, s.K, swizzle, r)) {
            std::printf("  %s: refused\n", name);
            return;
          }
          const float t = lt.timer.ms([&] { cfg.run(); }, reps);
          std::printf("  fused residual %s swizzle %d raster %s: %.3f ms (%.3f of today; one more read of x: %.3f ms)\n",
                      name, swizzle, r == Raster::AlongM ? "M" : "N", t, t / t_today, ny * 2 / 3.0e9);
        }
      cfg.run();
      compare("fused residual against today", out1, out0, ny);
    };
    try_res(r1, "coop 256x128 cluster 2x1");
    try_res(r2, "coop 128x256 cluster 1x2");
    std::printf("  today again: %.3f ms\n", lt.timer.ms(today, reps));
    for (void* p : {(void*)xres, (void*)out0, (void*)out1, (void*)gate, (void*)bias}) cudaFree(p);
  }
  return 0;
}
