// reduce_launch.h (cuda): declarations of the reduction launchers, shared by the nvcc side
// (reduce.cu, which defines and explicitly instantiates them) and the C++ side (reduce.cpp,
// which plans the reduction from Tensors and calls them). Plain types only (nvcc-safe).
//
// ReduceGeometry is cpu::ReducePlan in plain arrays: outputs are numbered in row-major order of
// the (coalesced) kept dims, the `count` reduced elements of an output in row-major order of the
// (coalesced) reduced dims, each addressed through the input's strides.
#pragma once
#include <cstdint>

#include "tensor/cuda/chunks.h"
#include "tensor/cuda/device.h"
#include "tensor/cuda/strided.h"

namespace engine::cuda {

struct ReduceGeometry {
  int n_kept = 0, n_red = 0;
  int64_t kept_sizes[kStridedMaxDims] = {}, kept_strides[kStridedMaxDims] = {};
  int64_t red_sizes[kStridedMaxDims] = {}, red_strides[kStridedMaxDims] = {};
  int64_t count = 1;  // reduced elements per output
  int64_t n_out = 1;  // outputs
};

// dst[o] = r.finish(fold of output o's reduced elements, count) for every output o.
// ch.n_chunks == 1: one thread per output folds all of its elements. Otherwise (chunks.h) one
// thread per (output, chunk) folds its chunk into partial[i] (a device scratch of
// n_out * n_chunks accumulators), then one thread per output combines its chunks in chunk order:
// the result depends only on the shapes, never on the launch configuration. The interleaved
// layout needs a single reduced dim (g.n_red == 1).
template <typename R, typename T, typename Out>
void launch_reduce(const ReduceGeometry& g, const T* x, Out* dst, R r, void* partial, const Chunks& ch, Stream stream);

// dst[l] = index of the first maximum along line l (kernels::argmax_line); the lines' starting
// offsets in x come from `lines` (one operand: the input), each of n elements at stride `stride`.
template <typename T>
void launch_argmax(const StridedGeometry<1>& lines, const T* x, int64_t n, int64_t stride, int64_t* dst,
                   Stream stream);

}  // namespace engine::cuda
