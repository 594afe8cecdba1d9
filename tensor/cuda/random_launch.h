// random_launch.h (cuda): launchers of the counter-based random kernels (random.cu). Plain types
// only, shared by nvcc and the C++ side (random.cpp).
#pragma once
#include <cstdint>

#include "tensor/cuda/device.h"

namespace engine::cuda {

// Which value element i of a draw takes (Note [counter-based RNG], tensor/kernels/philox.h):
enum class DrawKind : int {
  normal,   // normal_at(seed, offset + i)
  uniform,  // uniform_at(seed, offset + i), in [0, 1)
  integer,  // floor(uniform_at(seed, offset + i) * high), in [0, high)
};

// out[i] = the draw of element i for i < n, stored as the dtype with kernels/convert.h's code
// `dtype_code` (element size `element_size` bytes) through store_from_double, exactly as the CPU
// stores its draws; out contiguous. Asynchronous on `stream`.
void launch_draw(DrawKind kind, void* out, int dtype_code, int element_size, int64_t n, uint64_t seed,
                 uint64_t offset, int64_t high, Stream stream);

}  // namespace engine::cuda
