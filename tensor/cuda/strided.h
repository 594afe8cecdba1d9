// strided.h (cuda): the geometry a strided CUDA kernel receives, and the index arithmetic it runs.
//
// The GPU counterpart of tensor/cpu/loops.h. The host coalesces the operands exactly as the CPU
// loop does (cpu::coalesce: dims contiguous for every operand are merged, size-1 dims dropped)
// and passes the result by value as a kernel argument. Thread i then handles linear index i of
// the (row-major) shape: it peels the index from the last dim to the first, and each operand's
// element offset is sum(index[d] * strides[k][d]). A broadcast operand has stride 0 along the
// dims it is broadcast over, so it is read repeatedly, never copied.
//
// Only plain types here: the header is compiled by nvcc (no tensor.h, no fmt, no std::).
#pragma once
#include <cstdint>

#include "tensor/kernels/common.h"

namespace engine::cuda {

constexpr int kStridedMaxDims = 8;  // == engine::kMaxDims (checked in elementwise.cpp)

template <int N>
struct StridedGeometry {
  int ndim = 0;                      // after coalescing; 0 means a single element
  bool contiguous = false;           // ndim <= 1 and every operand has unit stride
  int64_t numel = 0;
  int64_t sizes[kStridedMaxDims] = {};
  int64_t strides[N][kStridedMaxDims] = {};  // in elements, per operand
};

// Element offsets of every operand for linear index `linear` of the geometry's shape.
template <int N>
ENGINE_HD void strided_offsets(const StridedGeometry<N>& g, int64_t linear, int64_t (&offsets)[N]) {
  for (int k = 0; k < N; ++k) offsets[k] = 0;
  for (int d = g.ndim - 1; d >= 0; --d) {
    const int64_t size = g.sizes[d];
    const int64_t i = linear % size;
    linear /= size;
    for (int k = 0; k < N; ++k) offsets[k] += i * g.strides[k][d];
  }
}

// Launch shape of the 1-D grid-stride kernels: 256 threads per block, and at most 2^16 blocks
// (enough to fill any current GPU many times over; each thread loops over the rest).
constexpr int kThreadsPerBlock = 256;
inline unsigned int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return unsigned(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}

}  // namespace engine::cuda
