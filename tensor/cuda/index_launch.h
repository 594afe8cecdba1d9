// index_launch.h (cuda): declarations of the indexing launchers (index.cu), plain types only so
// nvcc never parses tensor.h. The Tensor-level side is tensor/cuda/index.h.
//
// Every launcher takes a coalesced StridedGeometry<3> over the iteration shape (the index's shape,
// or the output's for index_select) whose operands are:
//   gather / index_select   0 = out, 1 = x with stride 0 along `dim`, 2 = the index
//   scatter_add / index_add 0 = out with stride 0 along `dim`, 1 = src, 2 = the index
// and the stride of x (or out) along `dim` and its size n there. An index outside [0, n) sets
// *bad to 1 (a device flag the host reads after the launch) and touches nothing (gather writes 0).
#pragma once
#include <cstdint>

#include "tensor/cuda/device.h"
#include "tensor/cuda/strided.h"

namespace engine::cuda {

// out[o0] = x[o1 + index[o2] * x_stride_dim]; T is an element of the right size (any dtype).
template <typename T, typename I>
void launch_gather(const StridedGeometry<3>& g, T* out, const T* x, const I* index, int64_t x_stride_dim, int64_t n,
                   int32_t* bad, Stream stream);

// out[o0 + index[o2] * out_stride_dim] += src[o1], one thread per source element, atomically.
template <typename T, typename I>
void launch_scatter_add(const StridedGeometry<3>& g, T* out, const T* src, const I* index, int64_t out_stride_dim,
                        int64_t n, int32_t* bad, Stream stream);

// out [rows, classes] (contiguous) = one_hot(index [rows], contiguous).
template <typename T, typename I>
void launch_one_hot(int64_t rows, int64_t classes, T* out, const I* index, int32_t* bad, Stream stream);

}  // namespace engine::cuda
