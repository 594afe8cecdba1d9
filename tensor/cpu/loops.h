// loops.h: the CPU's strided loop, shared by every elementwise-style CPU launcher.
//
// for_each_strided<N>(shape, strides, f) calls f(offsets) for every index of `shape`, where
// offsets[k] is the element offset of operand k (sum of index * stride). Adjacent dimensions that
// are laid out contiguously for every operand are merged first, so a contiguous tensor is one flat
// loop. Work is split over OpenMP threads by rows; results never depend on the thread count
// because every element is written by exactly one iteration.
#pragma once
#include <array>
#include <cstdint>

#include "tensor/tensor.h"

namespace engine::cpu {

constexpr int64_t kParallelGrain = 16384;  // below this many elements, stay on one thread

template <int N>
struct StridedShape {
  int ndim = 0;
  int64_t sizes[kMaxDims];
  int64_t strides[N][kMaxDims];
};

// Merge dims that are contiguous for every operand; drop size-1 dims.
template <int N>
StridedShape<N> coalesce(const Dims& shape, const std::array<Dims, N>& strides) {
  StridedShape<N> s;
  for (int d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (s.ndim > 0) {
      bool mergeable = true;
      for (int k = 0; k < N; ++k)
        if (s.strides[k][s.ndim - 1] != strides[k][d] * shape[d]) mergeable = false;
      if (mergeable) {
        s.sizes[s.ndim - 1] *= shape[d];
        for (int k = 0; k < N; ++k) s.strides[k][s.ndim - 1] = strides[k][d];
        continue;
      }
    }
    s.sizes[s.ndim] = shape[d];
    for (int k = 0; k < N; ++k) s.strides[k][s.ndim] = strides[k][d];
    ++s.ndim;
  }
  return s;
}

template <int N, typename F>
void for_each_strided(const Dims& shape, const std::array<Dims, N>& strides, F&& f) {
  const int64_t total = shape.product();
  if (total == 0) return;
  const StridedShape<N> s = coalesce<N>(shape, strides);
  if (s.ndim == 0) {  // a single element
    std::array<int64_t, N> offs{};
    f(offs);
    return;
  }
  const int nd = s.ndim;
  const int64_t inner = s.sizes[nd - 1];
  const int64_t outer = total / inner;
  // Split the inner dimension into blocks too, so a 1-D loop still uses every thread.
  const int64_t block = inner > kParallelGrain ? kParallelGrain : inner;
  const int64_t blocks_per_row = (inner + block - 1) / block;
  const int64_t work = outer * blocks_per_row;
#pragma omp parallel for schedule(static) if (total >= kParallelGrain)
  for (int64_t w = 0; w < work; ++w) {
    int64_t row = w / blocks_per_row;
    const int64_t i0 = (w % blocks_per_row) * block;
    const int64_t i1 = i0 + block < inner ? i0 + block : inner;
    std::array<int64_t, N> base{};
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t i = row % s.sizes[d];
      row /= s.sizes[d];
      for (int k = 0; k < N; ++k) base[k] += i * s.strides[k][d];
    }
    std::array<int64_t, N> offs;
    for (int64_t i = i0; i < i1; ++i) {
      for (int k = 0; k < N; ++k) offs[k] = base[k] + i * s.strides[k][nd - 1];
      f(offs);
    }
  }
}

// Strides of `t` broadcast to `shape` (0 where t has size 1 or lacks the leading dim).
Dims broadcast_strides(const Tensor& t, const Dims& shape);

}  // namespace engine::cpu
