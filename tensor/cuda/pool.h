// pool.h (cuda): max_pool2d / avg_pool2d on CUDA tensors (the CPU loops are in tensor/ops_pool.cpp;
// both use tensor/kernels/pool.h). x and out contiguous, f32 or f64, on one device.
#pragma once
#include "tensor/kernels/pool.h"
#include "tensor/tensor.h"

namespace engine::cuda {

void max_pool2d(const Tensor& x, const Tensor& out, int64_t planes, const kernels::PoolGeometry& g);
void avg_pool2d(const Tensor& x, const Tensor& out, int64_t planes, const kernels::PoolGeometry& g,
                bool count_include_pad);

}  // namespace engine::cuda
