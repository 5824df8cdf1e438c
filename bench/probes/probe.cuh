#pragma once
// What the standalone cuBLASLt probes share: probe.h, a hashed random fill, and their set-up.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "probe.h"

// p[i] = T of a value uniform in [-scale, scale), hashed from i and seed (bf16 or e4m3: round to nearest).
template <class T>
__global__ void fill(T* p, size_t n, unsigned seed, float scale) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    p[i] = T(scale * ((h & 0xffff) / 32768.0f - 1.0f));
  }
}

// A cuBLASLt handle, a 32 MiB workspace, the card's properties and a timer.
struct LtProbe {
  cublasLtHandle_t handle;
  size_t workspace = 32u << 20;
  void* work;
  cudaDeviceProp prop;
  Timer timer;
  LtProbe() {
    CK(cublasLtCreate(&handle));
    CK(cudaMalloc(&work, workspace));
    CK(cudaGetDeviceProperties(&prop, 0));
  }
  int version() const { return static_cast<int>(cublasLtGetVersion()); }
};
