#pragma once
// What the standalone cuBLASLt probes share: a checked call and random bf16 fill.
#include <cuda_bf16.h>
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

// p[i] uniform in [-scale, scale), hashed from i and seed.
__global__ void fill(__nv_bfloat16* p, size_t n, unsigned seed, float scale) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    p[i] = __float2bfloat16(scale * ((h & 0xffff) / 32768.0f - 1.0f));
  }
}
