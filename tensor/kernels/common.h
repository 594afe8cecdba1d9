// common.h: what every portable kernel body needs.
//
// Kernel bodies in tensor/kernels/ are inline functors marked ENGINE_HD: the CPU backend calls
// them from OpenMP loops (tensor/cpu/), the CUDA backend from kernels (tensor/cuda/). The CPU
// tests therefore exercise the arithmetic that the GPU runs.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define ENGINE_HD __host__ __device__ __forceinline__
#else
#define ENGINE_HD inline
#endif

namespace engine::kernels {

template <typename T>
ENGINE_HD T max_of(T a, T b) { return a > b ? a : b; }
template <typename T>
ENGINE_HD T min_of(T a, T b) { return a < b ? a : b; }

}  // namespace engine::kernels
