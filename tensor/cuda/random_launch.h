// random_launch.h (cuda): launchers of the counter-based random kernels (random.cu). Plain types
// only, shared by nvcc and the C++ side (random.cpp).
#pragma once
#include <cstdint>

#include "tensor/cuda/device.h"

namespace engine::cuda {

// out[i] = T(kernels::normal_at(seed, offset + i)) / T(kernels::uniform_at(seed, offset + i)) for
// i < n, out contiguous; T is float or double. Asynchronous on `stream`.
template <typename T>
void launch_normal(T* out, int64_t n, uint64_t seed, uint64_t offset, Stream stream);
template <typename T>
void launch_uniform(T* out, int64_t n, uint64_t seed, uint64_t offset, Stream stream);

}  // namespace engine::cuda
