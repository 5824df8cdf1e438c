#pragma once
// What the standalone probes share on the host side (nvcc or g++): a checked call and a timer.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

// CK(call): a non-zero status prints the call and ends the probe.
#define CK(x)                                                                                       \
  do {                                                                                              \
    auto ck_status = (x);                                                                           \
    if (ck_status != 0) {                                                                           \
      std::printf("error %d at %s:%d: %s\n", static_cast<int>(ck_status), __FILE__, __LINE__, #x); \
      std::exit(1);                                                                                 \
    }                                                                                               \
  } while (0)

// Mean milliseconds of `reps` calls of run() on the default stream, after `warmup` untimed ones.
struct Timer {
  cudaEvent_t e0, e1;
  Timer() {
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
  }
  template <class F>
  float ms(F&& run, int reps, int warmup = 3) {
    for (int i = 0; i < warmup; ++i) run();
    cudaEventRecord(e0);
    for (int i = 0; i < reps; ++i) run();
    cudaEventRecord(e1);
    CK(cudaEventSynchronize(e1));
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    return t / reps;
  }
};
