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

#include <omp.h>

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

// ---- Contiguous fast paths: every operand row-major, seen as [outer, n, inner] around `dim` ----

// The [outer, size(dim), inner] view of a row-major shape.
struct DimView {
  int64_t outer = 1, n = 1, inner = 1;
};
inline DimView dim_view(const Dims& sizes, int dim) {
  DimView v;
  for (int d = 0; d < dim; ++d) v.outer *= sizes[d];
  v.n = sizes[dim];
  for (int d = dim + 1; d < sizes.size(); ++d) v.inner *= sizes[d];
  return v;
}

// How many blocks to cut the inner extent into for the deterministic scatter loops: enough for
// every thread to have work when `outer` alone is too small, each block at least 256 elements
// (vector-friendly, no false sharing). Whole rows otherwise: splitting a row costs about 40% on
// one thread (the hardware prefetcher streams half-rows badly). Any split, thread-count dependent
// or not, gives bit-identical results: each output element still receives its additions from a
// single work item, in increasing j.
inline int64_t inner_blocks(int64_t outer, int64_t inner) {
  const int64_t threads = omp_get_max_threads();
  if (outer >= threads) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(inner / 256, (threads + outer - 1) / outer));
}

// gather / index_select when the indexed dim is innermost (inner == 1): lines along it, split into
// chunks so that one long line still uses every thread (gathers never collide). The index of
// outer row o starts at index + o * index_row_stride (n for gather, 0 for index_select's 1-D index).
template <typename T, typename I>
bool gather_lines(T* out, const T* x, const I* index, int64_t index_stride, int64_t index_row_stride,
                  const DimView& v, int64_t n_x) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (v.n + kChunk - 1) / kChunk;
  const int64_t work = v.outer * chunks;
  bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok) if (v.outer * v.n >= kParallelGrain && work > 1)
  for (int64_t w = 0; w < work; ++w) {
    const int64_t o = w / chunks, j0 = (w % chunks) * kChunk, j1 = std::min(j0 + kChunk, v.n);
    ok = kernels::gather_line(out + o * v.n + j0, x + o * n_x, index + o * index_row_stride + j0 * index_stride,
                              index_stride, j1 - j0, n_x) &&
         ok;
  }
  return ok;
}

// gather with x [outer, n_x, inner] and index/out [outer, n, inner].
template <typename T, typename I>
bool gather_contiguous(T* out, const T* x, const I* index, const DimView& v, int64_t n_x) {
  const int64_t rows = v.outer * v.n;
  if (n_x == 0) return rows * v.inner == 0;  // nothing to read from: every index is out of range
  if (v.inner == 1) return gather_lines(out, x, index, 1, v.n, v, n_x);
  bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok) if (rows * v.inner >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r / v.n;
    ok = kernels::gather_row(out + r * v.inner, x + o * n_x * v.inner, index + r * v.inner, v.inner, n_x) && ok;
  }
  return ok;
}

// index_select with x [outer, n_x, inner], a 1-D index of n entries (any stride), out [outer, n, inner].
template <typename T, typename I>
bool index_select_contiguous(T* out, const T* x, const I* index, int64_t index_stride, const DimView& v,
                             int64_t n_x) {
  const int64_t rows = v.outer * v.n;
  if (n_x == 0) return rows * v.inner == 0;
  if (v.inner == 1) return gather_lines(out, x, index, index_stride, 0, v, n_x);
  bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok) if (rows * v.inner >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r / v.n, j = r % v.n;
    const int64_t k = int64_t(index[j * index_stride]);
    T* dst = out + r * v.inner;
    if (kernels::index_in_range(k, n_x)) {
      kernels::copy_row(dst, x + (o * n_x + k) * v.inner, v.inner);
    } else {
      ok = false;
      for (int64_t i = 0; i < v.inner; ++i) dst[i] = T(0);
    }
  }
  return ok;
}

// scatter_add with out [outer, n_out, inner] and index/src [outer, n, inner]. Work items are
// (o, block of inner); j runs in order inside each (Note [deterministic scatter]).
template <typename T, typename I>
bool scatter_add_contiguous(T* out, const T* src, const I* index, const DimView& v, int64_t n_out) {
  bool ok = true;
  const bool parallel = v.outer * v.n * v.inner >= kParallelGrain;
  if (v.inner == 1) {  // lines along the indexed dim, one per outer row
#pragma omp parallel for schedule(static) reduction(&& : ok) if (parallel && v.outer > 1)
    for (int64_t o = 0; o < v.outer; ++o)
      ok = kernels::scatter_add_line(out + o * n_out, src + o * v.n, index + o * v.n, 1, v.n, n_out) && ok;
    return ok;
  }
  const int64_t blocks = inner_blocks(v.outer, v.inner);
  const int64_t block = (v.inner + blocks - 1) / blocks;
  const int64_t work = v.outer * blocks;
#pragma omp parallel for schedule(static) reduction(&& : ok) if (parallel && work > 1)
  for (int64_t w = 0; w < work; ++w) {
    const int64_t o = w / blocks, i0 = (w % blocks) * block, i1 = std::min(i0 + block, v.inner);
    T* out_o = out + o * n_out * v.inner;
    for (int64_t j = 0; j < v.n; ++j) {
      const int64_t row = (o * v.n + j) * v.inner;
      ok = kernels::scatter_add_row(out_o, src + row, index + row, i0, i1, v.inner, n_out) && ok;
    }
  }
  return ok;
}

// index_add with out [outer, n_out, inner], a 1-D index of n entries, src [outer, n, inner].
// Same work split as scatter_add_contiguous.
template <typename T, typename I>
bool index_add_contiguous(T* out, const T* src, const I* index, int64_t index_stride, const DimView& v,
                          int64_t n_out) {
  bool ok = true;
  const bool parallel = v.outer * v.n * v.inner >= kParallelGrain;
  if (v.inner == 1) {
#pragma omp parallel for schedule(static) reduction(&& : ok) if (parallel && v.outer > 1)
    for (int64_t o = 0; o < v.outer; ++o)
      ok = kernels::scatter_add_line(out + o * n_out, src + o * v.n, index, index_stride, v.n, n_out) && ok;
    return ok;
  }
  const int64_t blocks = inner_blocks(v.outer, v.inner);
  const int64_t block = (v.inner + blocks - 1) / blocks;
  const int64_t work = v.outer * blocks;
#pragma omp parallel for schedule(static) reduction(&& : ok) if (parallel && work > 1)
  for (int64_t w = 0; w < work; ++w) {
    const int64_t o = w / blocks, i0 = (w % blocks) * block, i1 = std::min(i0 + block, v.inner);
    for (int64_t j = 0; j < v.n; ++j) {
      const int64_t k = int64_t(index[j * index_stride]);
      if (!kernels::index_in_range(k, n_out)) {
        ok = false;
        continue;
      }
      kernels::add_row(out + (o * n_out + k) * v.inner + i0, src + (o * v.n + j) * v.inner + i0, i1 - i0);
    }
  }
  return ok;
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
