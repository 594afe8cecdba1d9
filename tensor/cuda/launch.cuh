// launch.cuh: how every CUDA kernel of the engine is launched (include from .cu files only).
//
//   launch_elements(n, [=] ENGINE_KERNEL (int64_t i) { out[i] = f(x[i]); }, stream);
//
// runs the body once for every i in [0, n): on a GPU as a grid-stride loop, 256 threads per
// block, at most 65536 blocks, 64-bit indices; in the emulated-device build (ENGINE_CUDA_EMULATION,
// the .cu file compiled by g++) as a plain host loop. The body is a functor or an extended
// __host__ __device__ lambda (nvcc --extended-lambda); it must not use shared memory, warp
// intrinsics or __syncthreads, so the same body runs in both builds and the emulated tests cover
// it. Bodies that accumulate into shared outputs use atomic_add below.
//
// Rule of the backend (docs/cuda.md): one thread per output element (or per independent unit of
// work), its arithmetic a portable body from tensor/kernels/. Reductions split long rows into
// chunks reduced by separate threads, then combine the chunks in a second launch, in a fixed
// order: results do not depend on the launch configuration, and they are deterministic.
#pragma once
#include <cstdint>
#include <type_traits>

#include "tensor/cuda/cuda_api.h"
#include "tensor/cuda/device.h"
#include "tensor/cuda/strided.h"

#if defined(__CUDACC__)
#define ENGINE_KERNEL __host__ __device__
#else
#define ENGINE_KERNEL
#endif

namespace engine::cuda {

#if defined(ENGINE_CUDA_EMULATION)

template <typename Body>
void launch_elements(int64_t n, const Body& body, Stream /*stream*/) {
  for (int64_t i = 0; i < n; ++i) body(i);
}

// Emulated atomics: kernels run serially, so a plain read-modify-write is exact.
template <typename T>
inline void atomic_add(T* address, T value) {
  *address += value;
}

#else

template <typename Body>
__global__ void elements_kernel(int64_t n, Body body) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) body(i);
}

template <typename Body>
void launch_elements(int64_t n, const Body& body, Stream stream) {
  if (n <= 0) return;
  elements_kernel<Body><<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(n, body);
  ENGINE_CUDA_CHECK(cudaGetLastError());  // launch errors (bad configuration, no device image)
}

// *address += value atomically, callable from a kernel body (a __host__ __device__ lambda).
// atomicAdd has native f32, f64 and i32 forms on sm_60+; i64 goes through the unsigned 64-bit form
// (two's complement addition is the same operation). Results of concurrent float adds depend on
// the order the hardware applies them (last-bit differences run to run).
template <typename T>
__host__ __device__ __forceinline__ void atomic_add(T* address, T value) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, int64_t>)
    atomicAdd(reinterpret_cast<unsigned long long*>(address), static_cast<unsigned long long>(value));
  else
    atomicAdd(address, value);
#else
  *address += value;  // the host pass of a __host__ __device__ body: never run by launch_elements
#endif
}

#endif

}  // namespace engine::cuda
