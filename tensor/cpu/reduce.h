// reduce.h (cpu): the loop of every reduction over a set of dims (sum, mean, amax, amin,
// logsumexp, var), driving a reducer from tensor/kernels/reduce.h.
//
// Determinism: every output is folded in an order that depends only on the shapes, never on the
// number of threads. Work is split three ways, chosen from the shapes alone:
//   - standard: one work item per output element; the reduced elements are walked in row-major
//     order, a stride-1 run through the reducer's vectorised fold_contig (16 fixed lanes) or
//     kLanes independent accumulators (combined in lane order);
//   - vertical: when the innermost kept dim is contiguous in memory (e.g. a sum over the batch of
//     [N, C]), a work item is a block of up to kVerticalBlock neighbouring outputs, and each
//     reduced position updates the whole block (contiguous loads instead of strided walks);
//   - chunked: when there are few outputs but many reduced elements (a full sum of a big tensor),
//     the reduced range is cut into a fixed number of chunks (a function of the sizes only), the
//     partial accumulators are computed in parallel and then combined in chunk order.
//
// parallel_items() is the one parallel loop of this family (reductions, softmax lines, norm
// rows): blocks of work items go to the threads, each block through a multiversioned function
// (Note [CPU multiversioning]).
#pragma once
#include <algorithm>
#include <array>
#include <vector>

#include "tensor/cpu/loops.h"
#include "tensor/kernels/reduce.h"
#include "tensor/tensor.h"

// Note [CPU multiversioning]: the build targets baseline x86-64 (SSE2), so that the binaries run
// everywhere. The hot loops of the reduction, softmax and norm families are also compiled for
// AVX2 (target_clones; the loader picks the version once per process), which doubles the width
// of their vectorised loops. FMA is deliberately not enabled: both versions perform the same IEEE
// operations, and every sum uses a fixed number of lanes (kernels::lane_sum), so the results are
// bitwise identical whichever version runs.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__) && \
    !defined(ENGINE_NO_CPU_CLONES)
#define ENGINE_CPU_CLONES __attribute__((target_clones("avx2", "default"), flatten))
#else
#define ENGINE_CPU_CLONES
#endif

namespace engine::cpu {

namespace detail {

// f(i) for i in [begin, end); f is inlined into each version (Note [CPU multiversioning]).
template <typename F>
ENGINE_CPU_CLONES void run_items(const F& f, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) f(i);
}

}  // namespace detail

// parallel_items(n, cost, f): f(i) for every i < n; `cost` is about the number of elements an
// item touches. Consecutive items are grouped into blocks of at least ~4096 elements of work (one
// multiversioned call each) that are spread over the threads. Each item must write only its own
// outputs, so results never depend on the thread count or the blocking.
template <typename F>
void parallel_items(int64_t n, int64_t cost, const F& f) {
  if (n <= 0) return;
  const int64_t c = cost > 1 ? cost : 1;
  const int64_t block = std::min(n, std::max<int64_t>(1, 4096 / c));
  const int64_t n_blocks = (n + block - 1) / block;
#pragma omp parallel for schedule(static) if (n * c >= kParallelGrain && n_blocks > 1)
  for (int64_t b = 0; b < n_blocks; ++b) detail::run_items(f, b * block, std::min(n, (b + 1) * block));
}

// The output shape and the reduced/kept split of a reduction. Kept and reduced dims are each
// coalesced (size-1 dims dropped, neighbours merged when they address memory linearly), which
// preserves the row-major order of outputs and of reduced elements.
struct ReducePlan {
  Dims out_sizes;     // with keepdim applied
  Dims kept_sizes;    // kept dims (coalesced)
  Dims kept_strides;  // x strides of the kept dims
  Dims red_sizes;     // reduced dims (coalesced)
  Dims red_strides;   // x strides of the reduced dims
  int64_t count = 1;  // number of elements folded per output
  int64_t n_out = 1;  // number of outputs
};
// `dims` empty means all dims. Throws naming `op` for an out-of-range or repeated dim.
ReducePlan plan_reduce(const Tensor& x, const Dims& dims, bool keepdim, const char* op);

namespace detail {

constexpr int kLanes = 8;
constexpr int64_t kVerticalBlock = 64;
constexpr int64_t kChunkWork = 16384;  // minimum elements per chunk of a split reduction
constexpr int64_t kMaxChunks = 64;
constexpr int64_t kFewGroups = 64;  // below this many work items, split the reduced range

inline int64_t kept_offset(const ReducePlan& p, int64_t o) {
  int64_t off = 0;
  for (int d = p.kept_sizes.size() - 1; d >= 0; --d) {
    off += (o % p.kept_sizes[d]) * p.kept_strides[d];
    o /= p.kept_sizes[d];
  }
  return off;
}

// Calls run(offset, length, stride) for the runs along the innermost reduced dim that cover the
// reduced positions [r0, r1) in row-major order; offsets are relative to the output's element.
template <typename Run>
void for_each_run(const ReducePlan& p, int64_t r0, int64_t r1, Run&& run) {
  const int nr = p.red_sizes.size();
  if (nr == 0) {  // nothing reduced: one element per output
    if (r0 < r1) run(int64_t(0), int64_t(1), int64_t(1));
    return;
  }
  int64_t idx[kMaxDims];
  int64_t off = 0, rem = r0;
  for (int d = nr - 1; d >= 0; --d) {
    idx[d] = rem % p.red_sizes[d];
    rem /= p.red_sizes[d];
    off += idx[d] * p.red_strides[d];
  }
  const int64_t inner = p.red_sizes[nr - 1], is = p.red_strides[nr - 1];
  int64_t pos = r0;
  while (pos < r1) {
    const int64_t i0 = idx[nr - 1];
    const int64_t len = std::min(inner - i0, r1 - pos);
    run(off, len, is);
    pos += len;
    if (pos >= r1) break;
    off -= i0 * is;  // back to the start of the row, then carry into the outer reduced dims
    idx[nr - 1] = 0;
    for (int d = nr - 2; d >= 0; --d) {
      off += p.red_strides[d];
      if (++idx[d] < p.red_sizes[d]) break;
      off -= idx[d] * p.red_strides[d];
      idx[d] = 0;
    }
  }
}

// Fold a run of n values at stride s into acc. Contiguous runs go to the reducer's vectorised
// fold_contig when it has one, else to kLanes independent accumulators.
template <typename R, typename T>
typename R::Acc fold_run(const R& r, const T* src, int64_t n, int64_t s, typename R::Acc acc, int64_t o) {
  if constexpr (requires { r.fold_contig(acc, src, n); }) {
    if (s == 1) return r.fold_contig(acc, src, n);
  }
  int64_t i = 0;
  if (s == 1 && n >= 2 * kLanes) {
    typename R::Acc lane[kLanes];
    for (int k = 0; k < kLanes; ++k) lane[k] = r.identity(o);
    for (; i + kLanes <= n; i += kLanes)
      for (int k = 0; k < kLanes; ++k) lane[k] = r.step(lane[k], src[i + k]);
    for (int k = 0; k < kLanes; ++k) acc = r.combine(acc, lane[k]);
  }
  for (; i < n; ++i) acc = r.step(acc, src[i * s]);
  return acc;
}

}  // namespace detail

// dst[o] = r.finish(fold of the reduced elements of output o, count), for every output o (in
// row-major order of p.kept_sizes). `dst` is contiguous.
template <typename R, typename T, typename Out>
void reduce_dims(const T* src, const ReducePlan& p, Out* dst, const R& r) {
  using namespace detail;
  using Acc = typename R::Acc;
  const int64_t n_out = p.n_out, count = p.count;
  if (n_out == 0) return;
  if (count == 0) {
    for (int64_t o = 0; o < n_out; ++o) dst[o] = r.finish(r.identity(o), 0);
    return;
  }
  const int nk = p.kept_sizes.size();
  const bool vertical = nk > 0 && p.kept_strides[nk - 1] == 1 && p.kept_sizes[nk - 1] >= 8 && count > 1;
  const int64_t inner_k = vertical ? p.kept_sizes[nk - 1] : 1;
  const int64_t blocks_per_row = vertical ? (inner_k + kVerticalBlock - 1) / kVerticalBlock : 1;
  const int64_t n_groups = vertical ? (n_out / inner_k) * blocks_per_row : n_out;
  const int64_t width = vertical ? std::min(inner_k, kVerticalBlock) : 1;

  int64_t n_chunks = 1, chunk_len = count;
  if (n_groups < kFewGroups && count * width >= 2 * kChunkWork) {
    chunk_len = std::max((count + kMaxChunks - 1) / kMaxChunks, (kChunkWork + width - 1) / width);
    n_chunks = (count + chunk_len - 1) / chunk_len;
  }
  std::vector<Acc> partial(n_chunks > 1 ? size_t(n_out * n_chunks) : 0);
  const int64_t items = n_groups * n_chunks;

  const int64_t item_cost = (count / n_chunks) * width;
  parallel_items(items, item_cost, [&](int64_t it) {
    const int64_t g = it / n_chunks, c = it % n_chunks;
    const int64_t r0 = c * chunk_len, r1 = std::min(count, r0 + chunk_len);
    if (!vertical) {
      const T* base = src + kept_offset(p, g);
      Acc acc = r.identity(g);
      for_each_run(p, r0, r1, [&](int64_t off, int64_t len, int64_t s) {
        acc = fold_run(r, base + off, len, s, acc, g);
      });
      if (n_chunks == 1)
        dst[g] = r.finish(acc, count);
      else
        partial[size_t(c * n_out + g)] = acc;
    } else {
      const int64_t q = g / blocks_per_row, j0 = (g % blocks_per_row) * kVerticalBlock;
      const int64_t w = std::min(kVerticalBlock, inner_k - j0);
      const int64_t o0 = q * inner_k + j0;
      const T* base = src + kept_offset(p, o0);
      Acc acc[kVerticalBlock];
      for (int64_t j = 0; j < w; ++j) acc[j] = r.identity(o0 + j);
      for_each_run(p, r0, r1, [&](int64_t off, int64_t len, int64_t s) {
        for (int64_t i = 0; i < len; ++i) {
          const T* row = base + off + i * s;
#pragma omp simd
          for (int64_t j = 0; j < w; ++j) acc[j] = r.step(acc[j], row[j]);
        }
      });
      for (int64_t j = 0; j < w; ++j) {
        if (n_chunks == 1)
          dst[o0 + j] = r.finish(acc[j], count);
        else
          partial[size_t(c * n_out + o0 + j)] = acc[j];
      }
    }
  });
  if (n_chunks > 1) {
    // Combine the chunks of each output in chunk order.
    parallel_items(n_out, n_chunks, [&](int64_t o) {
      Acc acc = partial[size_t(o)];
      for (int64_t c = 1; c < n_chunks; ++c) acc = r.combine(acc, partial[size_t(c * n_out + o)]);
      dst[o] = r.finish(acc, count);
    });
  }
}

// Length and stride of line `dim` of t (a 0-dim tensor is one line of length 1).
inline int64_t line_size(const Tensor& t, int dim) { return t.dim() == 0 ? 1 : t.size(dim); }
inline int64_t line_stride(const Tensor& t, int dim) { return t.dim() == 0 ? 1 : t.stride(dim); }

// for_each_line<N>(sizes, dim, strides, f): calls f(offsets) once per line along `dim`, where
// offsets[k] is where operand k's line starts (operand k has strides[k]); lines are numbered in
// row-major order of the other dims and spread over threads (each line written by one call).
template <int N, typename F>
void for_each_line(const Dims& sizes, int dim, const std::array<Dims, N>& strides, const F& f) {
  Dims os;
  int64_t ost[N][kMaxDims];
  for (int d = 0; d < sizes.size(); ++d)
    if (d != dim) {
      for (int k = 0; k < N; ++k) ost[k][os.size()] = strides[k][d];
      os.push_back(sizes[d]);
    }
  const int64_t n_lines = os.product();
  const int64_t n = sizes.size() == 0 ? 1 : sizes[dim];
  const int no = os.size();
  parallel_items(n_lines, n, [&](int64_t l) {
    std::array<int64_t, N> off{};
    int64_t rem = l;
    for (int d = no - 1; d >= 0; --d) {
      const int64_t i = rem % os[d];
      rem /= os[d];
      for (int k = 0; k < N; ++k) off[k] += i * ost[k][d];
    }
    f(off);
  });
}

// argmax along `dim` of x (any strides) into dst (contiguous i64, one entry per line).
// `dim` must not be empty.
template <typename T>
void argmax_dim(const Tensor& x, int dim, int64_t* dst) {
  const T* src = x.data<T>();
  const int64_t n = line_size(x, dim), s = line_stride(x, dim);
  const Dims out_strides = contiguous_strides([&] {
    Dims o = x.sizes();
    if (o.size() > 0) o[dim] = 1;
    return o;
  }());
  for_each_line<2>(x.sizes(), dim, {x.strides(), out_strides}, [&](const std::array<int64_t, 2>& off) {
    dst[off[1]] = kernels::argmax_line(src + off[0], n, s);
  });
}

}  // namespace engine::cpu
