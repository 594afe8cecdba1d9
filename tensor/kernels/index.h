// index.h: portable bodies of the indexing family (gather, index_select, scatter_add, index_add,
// one_hot). The CPU loops in tensor/cpu/index.h call them per element; CUDA kernels will call them
// per thread. They never throw: an out-of-range index makes them report `false` and touch no
// memory, and the launcher turns that into an engine::Error (after the loop) naming the op, the
// bad index and the size.
//
// Every op here reads or writes one element at
//   offset(non-indexed coordinates) + index_value * stride_along_dim,
// so the bodies take the pre-computed base offsets and the stride along the indexed dim:
//   gather:      out[p] = x[base_x(p) + index[p] * x_stride_dim]
//   scatter_add: out[base_out(p) + index[p] * out_stride_dim] += src[p]
//   one_hot:     out[p * C + index[p]] = 1
// index_select and index_add are gather and scatter_add whose index is broadcast (stride 0) over
// every dim but `dim`.
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

// 0 <= i < n, in one unsigned comparison (a negative i wraps to a huge value).
ENGINE_HD bool index_in_range(int64_t i, int64_t n) { return uint64_t(i) < uint64_t(n); }

// out = x[x_base + i * x_stride_dim]; false (and out = 0) when i is outside [0, n).
template <typename T, typename I>
ENGINE_HD bool gather_one(T* out, const T* x, int64_t x_base, I i, int64_t x_stride_dim, int64_t n) {
  if (!index_in_range(int64_t(i), n)) {
    *out = T(0);
    return false;
  }
  *out = x[x_base + int64_t(i) * x_stride_dim];
  return true;
}

// out[out_base + i * out_stride_dim] += v; false (nothing written) when i is outside [0, n).
// Callers must give each out element's contributions in a fixed order (see tensor/cpu/index.h):
// floating-point addition is not associative, and results must not depend on the thread count.
template <typename T, typename I>
ENGINE_HD bool scatter_add_one(T* out, int64_t out_base, I i, int64_t out_stride_dim, int64_t n, T v) {
  if (!index_in_range(int64_t(i), n)) return false;
  out[out_base + int64_t(i) * out_stride_dim] += v;
  return true;
}

// Row p of a one-hot output (num_classes entries, already zeroed): set entry i to one.
template <typename T, typename I>
ENGINE_HD bool one_hot_row(T* row, I i, int64_t num_classes) {
  if (!index_in_range(int64_t(i), num_classes)) return false;
  row[int64_t(i)] = T(1);
  return true;
}

}  // namespace engine::kernels
