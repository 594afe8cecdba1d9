// reduce.cu: the reduction kernels (sum, mean, amax, amin, logsumexp, var, argmax) with the
// portable reducers of tensor/kernels/reduce.h, the same bodies the CPU loop drives.
//
// One thread per output element folds its reduced elements (row-major order, r.step per
// element), or the reduction is cut into chunks (chunks.h, planned in reduce.cpp): one thread per
// (output, chunk) folds its chunk, a second launch combines each output's chunks in chunk order
// (reduce_launch.h). A reduction over the innermost contiguous dim takes interleaved chunks
// (chunk c folds elements c, c + C, ...), so that a warp's loads coalesce; long strided
// reductions over few outputs take blocked chunks. logsumexp and var stay two passes (the max /
// the f64 mean first), each chunked alike. Sums accumulate in double as on the CPU; the order
// differs from the CPU's 16-lane order, so results agree to rounding (f32: exactly after the
// final rounding in almost every case, f64: to ~1e-15 relative for well-conditioned data).
#include "tensor/cuda/chunks.h"
#include "tensor/cuda/launch.cuh"
#include "tensor/cuda/reduce_launch.h"
#include "tensor/kernels/reduce.h"

namespace engine::cuda {

namespace {

// Offset in x of the first reduced element of output o.
ENGINE_HD int64_t kept_offset(const ReduceGeometry& g, int64_t o) {
  int64_t off = 0;
  for (int d = g.n_kept - 1; d >= 0; --d) {
    off += (o % g.kept_sizes[d]) * g.kept_strides[d];
    o /= g.kept_sizes[d];
  }
  return off;
}

// Folds reduced positions [r0, r1) (row-major over the reduced dims) of the output whose first
// element is base[0] into acc. The N-d index is peeled once, then advanced with carries.
template <typename R, typename T>
ENGINE_HD typename R::Acc fold_range(const R& r, const ReduceGeometry& g, const T* base, int64_t r0, int64_t r1,
                                     typename R::Acc acc) {
  if (r0 >= r1) return acc;
  const int nr = g.n_red;
  if (nr == 0) return r.step(acc, base[0]);  // nothing reduced: the element itself
  int64_t idx[kStridedMaxDims];
  int64_t off = 0, rem = r0;
  for (int d = nr - 1; d >= 0; --d) {
    idx[d] = rem % g.red_sizes[d];
    rem /= g.red_sizes[d];
    off += idx[d] * g.red_strides[d];
  }
  const int64_t inner = g.red_sizes[nr - 1], is = g.red_strides[nr - 1];
  int64_t pos = r0;
  while (pos < r1) {
    // the rest of the innermost run, then a carry into the outer reduced dims
    const int64_t i0 = idx[nr - 1];
    const int64_t len = (inner - i0) < (r1 - pos) ? (inner - i0) : (r1 - pos);
    const T* p = base + off;
    for (int64_t i = 0; i < len; ++i) acc = r.step(acc, p[i * is]);
    pos += len;
    if (pos >= r1) break;
    off -= i0 * is;
    idx[nr - 1] = 0;
    for (int d = nr - 2; d >= 0; --d) {
      off += g.red_strides[d];
      if (++idx[d] < g.red_sizes[d]) break;
      off -= idx[d] * g.red_strides[d];
      idx[d] = 0;
    }
  }
  return acc;
}

}  // namespace

template <typename R, typename T, typename Out>
void launch_reduce(const ReduceGeometry& g, const T* x, Out* dst, R r, void* partial, const Chunks& ch, Stream stream) {
  using Acc = typename R::Acc;
  const int64_t n_out = g.n_out, count = g.count;
  if (n_out <= 0) return;
  if (ch.n_chunks <= 1) {
    launch_elements(
        n_out,
        [=] ENGINE_KERNEL(int64_t o) {
          dst[o] = r.finish(fold_range(r, g, x + kept_offset(g, o), 0, count, r.identity(o)), count);
        },
        stream);
    return;
  }
  Acc* part = static_cast<Acc*>(partial);
  launch_elements(
      n_out * ch.n_chunks,
      [=] ENGINE_KERNEL(int64_t i) {
        const ChunkSpan sp = chunk_span(ch, i);
        const T* base = x + kept_offset(g, sp.unit);
        if (ch.interleaved) {  // one reduced dim: every ch.n_chunks-th element from sp.begin
          const int64_t is = g.red_strides[0];
          Acc acc = r.identity(sp.unit);
          for (int64_t j = sp.begin; j < sp.end; j += sp.step) acc = r.step(acc, base[j * is]);
          part[i] = acc;
        } else {
          part[i] = fold_range(r, g, base, sp.begin, sp.end, r.identity(sp.unit));
        }
      },
      stream);
  launch_elements(
      n_out,
      [=] ENGINE_KERNEL(int64_t o) {
        const auto combine = [&r](const Acc& a, const Acc& b) { return r.combine(a, b); };
        dst[o] = r.finish(combine_chunks(ch, part, o, combine), count);
      },
      stream);
}

template <typename T>
void launch_argmax(const StridedGeometry<1>& lines, const T* x, int64_t n, int64_t stride, int64_t* dst,
                   Stream stream) {
  launch_elements(
      lines.numel,
      [=] ENGINE_KERNEL(int64_t l) {
        int64_t off[1];
        strided_offsets<1>(lines, l, off);
        dst[l] = kernels::argmax_line(x + off[0], n, stride);
      },
      stream);
}

// Aliases keep the reducer types free of commas inside the instantiation macro.
template <typename T>
using MeanStats = kernels::SumReducer<T, double>;  // var's first pass: means in double
template <typename T>
using MinReducer = kernels::MaxMinReducer<T, true>;
template <typename T>
using MaxReducer = kernels::MaxMinReducer<T, false>;

#define ENGINE_CUDA_REDUCE(R, T, Out) \
  template void launch_reduce<R, T, Out>(const ReduceGeometry&, const T*, Out*, R, void*, const Chunks&, Stream);
#define ENGINE_CUDA_REDUCERS(T)                          \
  ENGINE_CUDA_REDUCE(kernels::SumReducer<T>, T, T)       \
  ENGINE_CUDA_REDUCE(MinReducer<T>, T, T)                \
  ENGINE_CUDA_REDUCE(MaxReducer<T>, T, T)                \
  ENGINE_CUDA_REDUCE(kernels::LogSumExpReducer<T>, T, T) \
  ENGINE_CUDA_REDUCE(kernels::VarReducer<T>, T, T)
ENGINE_CUDA_REDUCERS(float)
ENGINE_CUDA_REDUCERS(double)
ENGINE_CUDA_REDUCE(MeanStats<float>, float, double)  // (for double it is SumReducer<double> itself)
#undef ENGINE_CUDA_REDUCERS
#undef ENGINE_CUDA_REDUCE

template void launch_argmax<float>(const StridedGeometry<1>&, const float*, int64_t, int64_t, int64_t*, Stream);
template void launch_argmax<double>(const StridedGeometry<1>&, const double*, int64_t, int64_t, int64_t*, Stream);
template void launch_argmax<int32_t>(const StridedGeometry<1>&, const int32_t*, int64_t, int64_t, int64_t*, Stream);
template void launch_argmax<int64_t>(const StridedGeometry<1>&, const int64_t*, int64_t, int64_t, int64_t*, Stream);
template void launch_argmax<uint8_t>(const StridedGeometry<1>&, const uint8_t*, int64_t, int64_t, int64_t*, Stream);

}  // namespace engine::cuda
