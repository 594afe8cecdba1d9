// index.h (cuda): the indexing family on CUDA tensors, with the contract of the CPU loops in
// tensor/cpu/index.h (raw shapes and strides from tensor/ops_index.cpp, no input made contiguous):
//
//   gather_loop      out[p] = x[x_base(p) + index[p] * x_stride_dim]          (gather, index_select)
//   scatter_add_loop out[out_base(p) + index[p] * out_stride_dim] += src[p]    (scatter_add, index_add)
//   one_hot          out [index.numel(), C] rows of zeros with a one at index[p]
//
// Each returns false when an index value was outside [0, n): the kernels raise a device flag and
// the host reads it back after the launch (one synchronisation per call; the op then names the bad
// value by searching the index on the host). The scatters add atomically, in the hardware's order
// (see index.cu): f32 / f64 results may differ in the last bits between runs.
#pragma once
#include "tensor/tensor.h"

namespace engine::cuda {

bool gather_loop(const Dims& shape, const Tensor& out, const Dims& out_strides, const Tensor& x, const Dims& x_strides,
                 int64_t x_stride_dim, int64_t n, const Tensor& index, const Dims& index_strides);

bool scatter_add_loop(const Dims& shape, const Tensor& out, const Dims& out_strides, int64_t out_stride_dim, int64_t n,
                      const Tensor& src, const Dims& src_strides, const Tensor& index, const Dims& index_strides);

bool one_hot(const Tensor& out, const Tensor& index, int64_t num_classes);

}  // namespace engine::cuda
