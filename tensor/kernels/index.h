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
// every dim but `dim`. The per-element bodies serve any strides; the row bodies below serve the
// common contiguous case, where the compiler can vectorise the inner loop.
#pragma once
#include <string.h>

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

// ---- Row bodies for contiguous operands, seen as [outer, n, inner] around the indexed dim ----
// (x has n_x entries along the dim, the index/out/src have n.) One call handles one row (o, j).

// gather: out_row[i] = x_o[idx_row[i] * inner + i] for i in [0, inner), x_o = x + o * n_x * inner.
// A bad index reads entry 0 instead (always in bounds: the caller guarantees n_x >= 1) and is
// reported; the branch-free loop lets the compiler vectorise it.
template <typename T, typename I>
ENGINE_HD bool gather_row(T* __restrict__ out_row, const T* __restrict__ x_o, const I* __restrict__ idx_row,
                          int64_t inner, int64_t n_x) {
  bool ok = true;
  for (int64_t i = 0; i < inner; ++i) {
    const int64_t k = int64_t(idx_row[i]);
    const bool in = index_in_range(k, n_x);
    ok &= in;
    out_row[i] = x_o[(in ? k : 0) * inner + i];
  }
  return ok;
}

// scatter_add: out_o[idx_row[i] * inner + i] += src_row[i] for i in [i0, i1).
template <typename T, typename I>
ENGINE_HD bool scatter_add_row(T* out_o, const T* src_row, const I* idx_row, int64_t i0, int64_t i1,
                               int64_t inner, int64_t n_out) {
  bool ok = true;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t k = int64_t(idx_row[i]);
    if (index_in_range(k, n_out)) {
      out_o[k * inner + i] += src_row[i];
    } else {
      ok = false;
    }
  }
  return ok;
}

// The indexed dim innermost (inner == 1): one line of `count` entries along it, the index read with
// stride idx_stride (1 for gather/scatter_add, the index's stride for index_select/index_add).
// gather / index_select: out[j] = x_o[idx[j]] (a bad index reads entry 0, n_x >= 1, and is reported).
template <typename T, typename I>
ENGINE_HD bool gather_line(T* __restrict__ out, const T* __restrict__ x_o, const I* __restrict__ idx,
                           int64_t idx_stride, int64_t count, int64_t n_x) {
  bool ok = true;
  for (int64_t j = 0; j < count; ++j) {
    const int64_t k = int64_t(idx[j * idx_stride]);
    const bool in = index_in_range(k, n_x);
    ok &= in;
    out[j] = x_o[in ? k : 0];
  }
  return ok;
}
// scatter_add / index_add: out_o[idx[j]] += src[j], in increasing j.
template <typename T, typename I>
ENGINE_HD bool scatter_add_line(T* __restrict__ out_o, const T* __restrict__ src, const I* __restrict__ idx,
                                int64_t idx_stride, int64_t count, int64_t n_out) {
  bool ok = true;
  for (int64_t j = 0; j < count; ++j) {
    const int64_t k = int64_t(idx[j * idx_stride]);
    if (index_in_range(k, n_out)) {
      out_o[k] += src[j];
    } else {
      ok = false;
    }
  }
  return ok;
}

// index_select / index_add move whole rows: dst[i] = src[i] and dst[i] += src[i], i in [0, len).
template <typename T>
ENGINE_HD void copy_row(T* __restrict__ dst, const T* __restrict__ src, int64_t len) {
  memcpy(dst, src, size_t(len) * sizeof(T));  // host libc and CUDA device code both provide memcpy
}
template <typename T>
ENGINE_HD void add_row(T* __restrict__ dst, const T* __restrict__ src, int64_t len) {
  for (int64_t i = 0; i < len; ++i) dst[i] += src[i];
}

}  // namespace engine::kernels
