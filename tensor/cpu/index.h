// index.h (cpu): the CPU loops of the indexing family, over the portable bodies of
// tensor/kernels/index.h. All loops take raw strides, so no input has to be made contiguous.
//
// Determinism (Note [deterministic scatter]): scatter_add and index_add add several source elements
// into the same output element when the index has duplicates. Floating-point addition is not
// associative, so the order of those additions must not depend on the thread count. Two source
// elements can only collide when they differ in the indexed coordinate alone, so
// for_each_along_dim hands every "line" along `dim` to exactly one thread, which walks it in
// increasing order. Threads split the other (non-indexed) dims, never the index.
#pragma once
#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <optional>

#include "tensor/cpu/loops.h"
#include "tensor/kernels/index.h"
#include "tensor/tensor.h"

namespace engine::cpu {

// Calls f(offsets) for every index of `shape` (offsets[k] = sum of index * strides[k]), such that
// the elements that differ only in coordinate `dim` are visited by one thread, in increasing order
// of that coordinate. The other dims are coalesced and split over threads: when `dim` is the
// innermost dim each work item is one line along it; otherwise a work item is a block of the
// innermost other dim, walked as "for j along dim: for i in block", which keeps memory accesses
// sequential when `dim` is an outer dim (index_add of rows).
template <int N, typename F>
void for_each_along_dim(const Dims& shape, int dim, const std::array<Dims, N>& strides, F&& f) {
  const int64_t total = shape.product();
  if (total == 0) return;
  const int64_t n = shape[dim];
  std::array<int64_t, N> dim_stride;
  for (int k = 0; k < N; ++k) dim_stride[k] = strides[k][dim];
  Dims rest_shape;
  std::array<Dims, N> rest_strides;
  bool dim_is_innermost = true;
  for (int d = 0; d < shape.size(); ++d) {
    if (d == dim) continue;
    rest_shape.push_back(shape[d]);
    for (int k = 0; k < N; ++k) rest_strides[k].push_back(strides[k][d]);
    if (d > dim && shape[d] != 1) dim_is_innermost = false;
  }
  const StridedShape<N> s = coalesce<N>(rest_shape, rest_strides);
  const int nd = s.ndim;
  // Lines mode: the block is one element of the other dims. Block mode: blocks of the innermost
  // other dim. Block sizes depend only on the shape, never on the thread count.
  const int64_t inner = (nd == 0 || dim_is_innermost) ? 1 : s.sizes[nd - 1];
  const int64_t rows = total / (n * inner);
  const int64_t blocks_per_row =
      std::max<int64_t>(1, std::min<int64_t>((inner + 15) / 16, (64 + rows - 1) / rows));
  const int64_t block = (inner + blocks_per_row - 1) / blocks_per_row;
  const int row_dims = (nd == 0 || dim_is_innermost) ? nd : nd - 1;
  std::array<int64_t, N> inner_stride{};
  if (row_dims < nd)
    for (int k = 0; k < N; ++k) inner_stride[k] = s.strides[k][nd - 1];
  const int64_t work = rows * blocks_per_row;
#pragma omp parallel for schedule(static) if (total >= kParallelGrain && work > 1)
  for (int64_t w = 0; w < work; ++w) {
    int64_t row = w / blocks_per_row;
    const int64_t i0 = (w % blocks_per_row) * block;
    const int64_t i1 = std::min(i0 + block, inner);
    std::array<int64_t, N> base{};
    for (int d = row_dims - 1; d >= 0; --d) {
      const int64_t i = row % s.sizes[d];
      row /= s.sizes[d];
      for (int k = 0; k < N; ++k) base[k] += i * s.strides[k][d];
    }
    std::array<int64_t, N> offs;
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t i = i0; i < i1; ++i) {
        for (int k = 0; k < N; ++k) offs[k] = base[k] + j * dim_stride[k] + i * inner_stride[k];
        f(offs);
      }
    }
  }
}

// out (shape of `shape`, strides out_strides) = x gathered along `dim`:
//   out[p] = x[x_base(p) + index[p] * x_stride_dim], x_base uses x_strides with x_strides[dim] = 0.
// index_strides may be 0 on broadcast dims (index_select). Returns false when some index value was
// outside [0, n); those outputs are zero.
template <typename T, typename I>
bool gather_loop(const Dims& shape, T* out, const Dims& out_strides, const T* x, const Dims& x_strides,
                 int64_t x_stride_dim, int64_t n, const I* index, const Dims& index_strides) {
  std::atomic<bool> bad{false};
  for_each_strided<3>(shape, {out_strides, x_strides, index_strides}, [&](const std::array<int64_t, 3>& o) {
    if (!kernels::gather_one(out + o[0], x, o[1], index[o[2]], x_stride_dim, n))
      bad.store(true, std::memory_order_relaxed);
  });
  return !bad.load();
}

// out[out_base(p) + index[p] * out_stride_dim] += src[p] for every p of `shape` (index's shape);
// out_strides has 0 at `dim`. Deterministic (Note [deterministic scatter]). Returns false when some
// index value was outside [0, n); those source elements are skipped.
template <typename T, typename I>
bool scatter_add_loop(const Dims& shape, int dim, T* out, const Dims& out_strides, int64_t out_stride_dim,
                      int64_t n, const T* src, const Dims& src_strides, const I* index, const Dims& index_strides) {
  std::atomic<bool> bad{false};
  for_each_along_dim<3>(shape, dim, {out_strides, src_strides, index_strides}, [&](const std::array<int64_t, 3>& o) {
    if (!kernels::scatter_add_one(out, o[0], index[o[2]], out_stride_dim, n, src[o[1]]))
      bad.store(true, std::memory_order_relaxed);
  });
  return !bad.load();
}

// out: contiguous [index.shape..., num_classes]; every row is zero but for a one at index[p].
template <typename T, typename I>
bool one_hot_loop(const Dims& index_shape, const I* index, const Dims& index_strides, T* out,
                  int64_t num_classes) {
  Dims row_strides = contiguous_strides(index_shape);
  for (int d = 0; d < row_strides.size(); ++d) row_strides[d] *= num_classes;
  std::atomic<bool> bad{false};
  for_each_strided<2>(index_shape, {row_strides, index_strides}, [&](const std::array<int64_t, 2>& o) {
    T* row = out + o[0];
    for (int64_t c = 0; c < num_classes; ++c) row[c] = T(0);
    if (!kernels::one_hot_row(row, index[o[1]], num_classes)) bad.store(true, std::memory_order_relaxed);
  });
  return !bad.load();
}

// The first index value (in logical order) outside [0, n), with its position; for error messages
// after a loop reported a bad index.
struct BadIndex {
  Dims position;
  int64_t value = 0;
};
std::optional<BadIndex> find_bad_index(const Tensor& index, int64_t n);

// dst = src for two tensors of one dtype and shape (dst usually a view into a fresh output, as in
// cat and stack). Copies raw elements by size, so it serves every dtype; rows that are contiguous
// on both sides are memcpy'd.
void copy_elements(const Tensor& dst, const Tensor& src);

}  // namespace engine::cpu
