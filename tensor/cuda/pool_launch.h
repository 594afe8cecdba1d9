// pool_launch.h (cuda): max_pool2d / avg_pool2d launchers (pool.cu), plain types only. x and out
// are contiguous stacks of `planes` [h, w] and [ho, wo] planes.
#pragma once
#include <cstdint>

#include "tensor/cuda/device.h"
#include "tensor/kernels/pool.h"

namespace engine::cuda {

template <typename T>
void launch_max_pool2d(const T* x, T* out, int64_t planes, const kernels::PoolGeometry& g, Stream stream);
template <typename T>
void launch_avg_pool2d(const T* x, T* out, int64_t planes, const kernels::PoolGeometry& g, bool count_include_pad,
                       Stream stream);

}  // namespace engine::cuda
