// Probe: is cuDNN's first bf16 flash-attention plan the fastest at the models' shapes? Builds the bf16 SDPA
// graph the way --attention auto runs it ([B, S, H, D] memory, fp32 softmax, no mask; with and without the
// log-sum-exp that Ring attention needs), then times every execution plan the heuristics (modes A and
// FALLBACK) offer, and prints each one's time and rate against the first.
// Build (GPU machine): g++ -O2 -std=c++17 cudnn_sdpa_plans.cpp -I<frontend>/include -I<cudnn>/include
//   -I/usr/local/cuda/include <cudnn>/lib/libcudnn.so.9 -L/usr/local/cuda/lib64 -lcudart -o probe_sdpa
// Run: ./probe_sdpa [reps]
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#define CUDNN_FRONTEND_SKIP_JSON_LIB 1
#include <cudnn_frontend.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "probe.h"

namespace fe = cudnn_frontend;
using TensorPtr = std::shared_ptr<fe::graph::Tensor_attributes>;

struct Shape {
  const char* name;
  int64_t B, H, Sq, Sk, D;
};

std::vector<int64_t> bshd(int64_t S, int64_t H, int64_t D) { return {S * H * D, D, H * D, 1}; }

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 10;
  const Shape shapes[] = {
      {"ltx2 video self (B2)", 2, 32, 6144, 6144, 128},
      {"ltx2 video self (B1)", 1, 32, 6144, 6144, 128},
      {"ltx2 video text cross (B2)", 2, 32, 6144, 1024, 128},
      {"ltx2 video <- audio (B2)", 2, 32, 6144, 126, 64},
      {"flux2 joint (B1)", 1, 48, 4608, 4608, 128},
      {"qwen joint (B1)", 1, 24, 4224, 4224, 128},
  };
  cudnnHandle_t handle;
  CK(cudnnCreate(&handle));
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("%s, cuDNN %zu, frontend %d, %d reps\n", prop.name, cudnnGetVersion(), CUDNN_FRONTEND_VERSION, reps);
  Timer timer;
  for (const Shape& s : shapes) {
    for (int lse = 0; lse < 2; ++lse) {
      fe::graph::Graph g;
      g.set_io_data_type(fe::DataType_t::BFLOAT16)
          .set_intermediate_data_type(fe::DataType_t::FLOAT)
          .set_compute_data_type(fe::DataType_t::FLOAT);
      auto input = [&](const char* name, int64_t S) {
        return g.tensor(fe::graph::Tensor_attributes().set_name(name).set_dim({s.B, s.H, S, s.D}).set_stride(bshd(S, s.H, s.D)));
      };
      TensorPtr q = input("Q", s.Sq), k = input("K", s.Sk), v = input("V", s.Sk);
      auto options = fe::graph::SDPA_attributes()
                         .set_name("sdpa")
                         .set_generate_stats(lse == 1)
                         .set_attn_scale(static_cast<float>(1.0 / std::sqrt(double(s.D))));
      auto [o, stats] = g.sdpa(q, k, v, options);
      o->set_output(true).set_dim({s.B, s.H, s.Sq, s.D}).set_stride(bshd(s.Sq, s.H, s.D));
      if (lse)
        stats->set_output(true)
            .set_dim({s.B, s.H, s.Sq, 1})
            .set_stride({s.H * s.Sq, s.Sq, 1, 1})
            .set_data_type(fe::DataType_t::FLOAT);
      std::printf("%s [B %ld, H %ld, Sq %ld, Sk %ld, D %ld]%s\n", s.name, long(s.B), long(s.H), long(s.Sq),
                  long(s.Sk), long(s.D), lse ? " + log-sum-exp" : "");
      auto good = [](fe::error_t e, const char* what) {
        if (!e.is_good()) std::printf("  %s: %s\n", what, e.get_message().c_str());
        return e.is_good();
      };
      if (!good(g.validate(), "validate") || !good(g.build_operation_graph(handle), "build_operation_graph") ||
          !good(g.create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}), "create_execution_plans") ||
          !good(g.check_support(handle), "check_support"))
        continue;
      const int64_t plans = g.get_execution_plan_count();
      const size_t nq = size_t(s.B * s.H * s.Sq * s.D), nk = size_t(s.B * s.H * s.Sk * s.D);
      void *qp, *kp, *vp, *op, *sp = nullptr;
      CK(cudaMalloc(&qp, nq * 2));
      CK(cudaMalloc(&kp, nk * 2));
      CK(cudaMalloc(&vp, nk * 2));
      CK(cudaMalloc(&op, nq * 2));
      CK(cudaMemset(qp, 0x3c, nq * 2));  // bf16 0x3c3c ~ 0.0115: finite, equal values
      CK(cudaMemset(kp, 0x3c, nk * 2));
      CK(cudaMemset(vp, 0x3c, nk * 2));
      if (lse) CK(cudaMalloc(&sp, size_t(s.B * s.H * s.Sq) * 4));
      std::unordered_map<TensorPtr, void*> pack = {{q, qp}, {k, kp}, {v, vp}, {o, op}};
      if (lse) pack.emplace(stats, sp);
      const double flop = 4.0 * s.B * s.H * double(s.Sq) * s.Sk * s.D;
      float first = -1, best = 1e30f;
      int64_t best_i = -1;
      for (int64_t i = 0; i < plans; ++i) {
        std::string name;
        (void)g.get_plan_name_at_index(i, name);
        if (!g.build_plan_at_index(i).is_good()) {
          std::printf("  #%ld %s: does not build\n", long(i), name.c_str());
          continue;
        }
        const int64_t ws = g.get_workspace_size_plan_at_index(i);
        void* work = nullptr;
        if (ws > 0) CK(cudaMalloc(&work, ws));
        bool ok = g.execute_plan_at_index(handle, pack, work, i).is_good();
        for (int r = 0; ok && r < 2; ++r) ok = g.execute_plan_at_index(handle, pack, work, i).is_good();
        if (!ok) {
          std::printf("  #%ld %s: does not run\n", long(i), name.c_str());
          if (work) cudaFree(work);
          continue;
        }
        const float ms = timer.ms([&] { (void)g.execute_plan_at_index(handle, pack, work, i); }, reps, 0);
        std::printf("  #%ld: %.4f ms %4.0f TFLOP/s, workspace %ld, %s\n", long(i), ms, flop / ms / 1e9, long(ws),
                    name.c_str());
        if (first < 0) first = ms;
        if (ms < best) best = ms, best_i = i;
        if (work) cudaFree(work);
      }
      if (best_i >= 0)
        std::printf("  first %.4f ms, best #%ld %.4f ms: %.1f %% faster\n", first, long(best_i), best,
                    100.0 * (first - best) / first);
      for (void* p : {qp, kp, vp, op, sp})
        if (p) cudaFree(p);
    }
  }
  return 0;
}
