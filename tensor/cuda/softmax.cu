// softmax.cu: softmax, log_softmax and cross_entropy kernels with the portable line bodies of
// tensor/kernels/softmax.h (the ones the CPU loop calls).
//
// Lines along the innermost contiguous dim (of 8 or more elements) are cut into interleaved
// chunks (chunks.h: chunk c reads elements c, c + C, ..., so a warp's loads coalesce), long
// strided lines over few of them into blocked chunks; one thread per (line, chunk) writes a
// partial maximum, a launch combines them per line in chunk order, then the same for the sums of
// exp(x - max) in double, and one thread per element writes the output. Other lines: one thread
// per line runs the CPU's line body (max, exponential sum in double, normalisation in the CPU's
// order), so results differ from the CPU only by the device's exp/log (last-bit). The per-element
// arithmetic of the chunked path is the line bodies' (T(x - m) through exp, sums of the rounded
// values in double); only the order of the double sums differs.
#include "tensor/cuda/chunks.h"
#include "tensor/cuda/launch.cuh"
#include "tensor/cuda/softmax_launch.h"
#include "tensor/kernels/softmax.h"

namespace engine::cuda {

namespace {

// Second pass of a chunked line sum: sums[l] = the line's partials added in chunk order, so the
// result does not depend on scheduling.
void launch_sum_chunks(const Chunks& ch, const double* part, double* sums, Stream stream) {
  launch_elements(
      ch.n_units,
      [=] ENGINE_KERNEL(int64_t l) {
        sums[l] = combine_chunks(ch, part, l, [](double a, double b) { return a + b; });
      },
      stream);
}

// First launch of a chunked line pass: part[i] = fold(sp, off) for thread i, sp its chunk span
// and off the offsets of its line's start in every operand of `lines`.
template <int N, typename Fold>
void launch_chunk_partials(const StridedGeometry<N>& lines, const Chunks& ch, double* part, Fold fold,
                           Stream stream) {
  launch_elements(
      ch.n_units * ch.n_chunks,
      [=] ENGINE_KERNEL(int64_t i) {
        const ChunkSpan sp = chunk_span(ch, i);
        int64_t off[N];
        strided_offsets<N>(lines, sp.unit, off);
        part[i] = fold(sp, off);
      },
      stream);
}

// One thread per element of the chunked lines: body(l, j, off) for element j of line l, off the
// offsets of the line's start in every operand of `lines` (n elements per line).
template <int N, typename Body>
void launch_line_elements(const StridedGeometry<N>& lines, int64_t n, Body body, Stream stream) {
  launch_elements(
      lines.numel * n,
      [=] ENGINE_KERNEL(int64_t i) {
        const int64_t l = i / n, j = i % n;
        int64_t off[N];
        strided_offsets<N>(lines, l, off);
        body(l, j, off);
      },
      stream);
}

// Passes 1-4 of a chunked line: per (line, chunk) partial maxima, per line their max (chunk
// order), per (line, chunk) partial sums of exp(x - max) in double, per line their sum (chunk
// order). Line l of x starts at operand 0's offset of `lines`; part holds lines.numel * n_chunks.
template <typename T, int N>
void launch_line_stats(const StridedGeometry<N>& lines, const T* x, int64_t xs, const Chunks& ch, double* part,
                       double* maxes, double* sums, Stream stream) {
  const kernels::MaxMinReducer<T, false> mx;
  launch_chunk_partials<N>(
      lines, ch, part,
      [=] ENGINE_KERNEL(const ChunkSpan& sp, const int64_t* off) {
        T m = mx.identity(0);
        for (int64_t j = sp.begin; j < sp.end; j += sp.step) m = mx.step(m, x[off[0] + j * xs]);
        return double(m);
      },
      stream);
  launch_elements(
      lines.numel,
      [=] ENGINE_KERNEL(int64_t l) {
        maxes[l] = combine_chunks(ch, part, l, [mx](double a, double b) { return double(mx.combine(T(a), T(b))); });
      },
      stream);
  launch_chunk_partials<N>(
      lines, ch, part,
      [=] ENGINE_KERNEL(const ChunkSpan& sp, const int64_t* off) {
        const T m = T(maxes[sp.unit]);
        double s = 0;
        for (int64_t j = sp.begin; j < sp.end; j += sp.step) s += double(kernels::sexp(T(x[off[0] + j * xs] - m)));
        return s;
      },
      stream);
  launch_sum_chunks(ch, part, sums, stream);
}

// One softmax element from its line's max m and exponential sum (the line body's arithmetic:
// exp of the rounded difference, times the rounded reciprocal of the sum).
template <typename T>
ENGINE_HD T softmax_at(T v, T m, double sum) {
  return kernels::sexp(T(v - m)) * T(1.0 / sum);
}

// out[0] = the mean of the rows' losses, summed in row order by one thread (deterministic);
// rows = 0 gives 0/0 = NaN, as PyTorch.
template <typename T>
void launch_mean_loss(const double* losses, int64_t rows, T* out, Stream stream) {
  launch_elements(
      1,
      [=] ENGINE_KERNEL(int64_t) {
        double total = 0;
        for (int64_t r = 0; r < rows; ++r) total += losses[r];
        out[0] = T(total / double(rows));
      },
      stream);
}

}  // namespace

template <typename T>
void launch_softmax(const StridedGeometry<2>& lines, const T* x, int64_t xs, T* y, int64_t ys, int64_t n, bool log,
                    Stream stream) {
  launch_elements(
      lines.numel,
      [=] ENGINE_KERNEL(int64_t l) {
        int64_t off[2];
        strided_offsets<2>(lines, l, off);
        if (log)
          kernels::log_softmax_line(x + off[0], xs, y + off[1], ys, n);
        else
          kernels::softmax_line(x + off[0], xs, y + off[1], ys, n);
      },
      stream);
}

template <typename T>
void launch_softmax_backward(const StridedGeometry<3>& lines, const T* g, int64_t gs, const T* y, int64_t ys, T* dx,
                             int64_t ds, int64_t n, bool log, Stream stream) {
  launch_elements(
      lines.numel,
      [=] ENGINE_KERNEL(int64_t l) {
        int64_t off[3];
        strided_offsets<3>(lines, l, off);
        if (log)
          kernels::log_softmax_backward_line(g + off[0], gs, y + off[1], ys, dx + off[2], ds, n);
        else
          kernels::softmax_backward_line(g + off[0], gs, y + off[1], ys, dx + off[2], ds, n);
      },
      stream);
}

template <typename T>
void launch_softmax_chunked(const StridedGeometry<2>& lines, const T* x, int64_t xs, T* y, int64_t ys, int64_t n,
                            bool log, const Chunks& ch, double* scratch, Stream stream) {
  const int64_t n_lines = lines.numel, n_chunks = ch.n_chunks;
  double* part = scratch;                        // [n_lines * n_chunks], chunk_slot order
  double* maxes = scratch + n_chunks * n_lines;  // [n_lines], values of T
  double* sums = maxes + n_lines;                // [n_lines]
  launch_line_stats<T, 2>(lines, x, xs, ch, part, maxes, sums, stream);
  launch_line_elements<2>(
      lines, n,
      [=] ENGINE_KERNEL(int64_t l, int64_t j, const int64_t* off) {
        const T v = x[off[0] + j * xs];
        const T m = T(maxes[l]);
        if (log)
          y[off[1] + j * ys] = T(double(v) - (double(m) + ::log(sums[l])));
        else
          y[off[1] + j * ys] = softmax_at(v, m, sums[l]);
      },
      stream);
}

template <typename T>
void launch_softmax_backward_chunked(const StridedGeometry<3>& lines, const T* g, int64_t gs, const T* y, int64_t ys,
                                     T* dx, int64_t ds, int64_t n, bool log, const Chunks& ch, double* scratch,
                                     Stream stream) {
  const int64_t n_lines = lines.numel, n_chunks = ch.n_chunks;
  double* part = scratch;                       // [n_lines * n_chunks], chunk_slot order
  double* sums = scratch + n_chunks * n_lines;  // [n_lines]: sum(g y) or sum(g)
  launch_chunk_partials<3>(
      lines, ch, part,
      [=] ENGINE_KERNEL(const ChunkSpan& sp, const int64_t* off) {
        double s = 0;
        for (int64_t j = sp.begin; j < sp.end; j += sp.step) {
          const double gv = double(g[off[0] + j * gs]);
          s += log ? gv : gv * double(y[off[1] + j * ys]);
        }
        return s;
      },
      stream);
  launch_sum_chunks(ch, part, sums, stream);
  launch_line_elements<3>(
      lines, n,
      [=] ENGINE_KERNEL(int64_t l, int64_t j, const int64_t* off) {
        const T gv = g[off[0] + j * gs], yv = y[off[1] + j * ys];
        const T s = T(sums[l]);
        dx[off[2] + j * ds] = log ? T(gv - kernels::sexp(yv) * s) : T(yv * (gv - s));
      },
      stream);
}

template <typename T>
void launch_cross_entropy(const T* x, int64_t rows, int64_t c, int64_t xr, int64_t xc, const int64_t* t, int64_t ts,
                          double* losses, T* out, Stream stream) {
  launch_elements(
      rows, [=] ENGINE_KERNEL(int64_t r) { losses[r] = kernels::cross_entropy_row(x + r * xr, xc, c, t[r * ts]); },
      stream);
  launch_mean_loss(losses, rows, out, stream);
}

template <typename T>
void launch_cross_entropy_backward(const T* x, int64_t rows, int64_t c, int64_t xr, int64_t xc, const int64_t* t,
                                   int64_t ts, const T* g, double inv_n, T* dx, Stream stream) {
  launch_elements(
      rows,
      [=] ENGINE_KERNEL(int64_t r) {
        kernels::cross_entropy_backward_row(x + r * xr, xc, dx + r * c, int64_t(1), c, t[r * ts],
                                            T(double(g[0]) * inv_n));
      },
      stream);
}

template <typename T>
void launch_cross_entropy_chunked(const StridedGeometry<1>& rows, const T* x, const int64_t* t, int64_t ts,
                                  const Chunks& ch, double* scratch, double* losses, T* out, Stream stream) {
  const int64_t n = rows.numel;
  double* maxes = scratch + ch.n_chunks * n;
  double* sums = maxes + n;
  launch_line_stats<T, 1>(rows, x, 1, ch, scratch, maxes, sums, stream);
  // -log_softmax(x_r)_{t_r} = (m + log(sum)) - x_{r, t_r}, as kernels::cross_entropy_row.
  launch_elements(
      n,
      [=] ENGINE_KERNEL(int64_t r) {
        int64_t off[1];
        strided_offsets<1>(rows, r, off);
        losses[r] = (maxes[r] + ::log(sums[r])) - double(x[off[0] + t[r * ts]]);
      },
      stream);
  launch_mean_loss(losses, n, out, stream);
}

template <typename T>
void launch_cross_entropy_backward_chunked(const StridedGeometry<1>& rows, const T* x, const int64_t* t, int64_t ts,
                                           const T* g, double inv_n, T* dx, const Chunks& ch, double* scratch,
                                           Stream stream) {
  const int64_t n = rows.numel, c = ch.len;
  double* maxes = scratch + ch.n_chunks * n;
  double* sums = maxes + n;
  launch_line_stats<T, 1>(rows, x, 1, ch, scratch, maxes, sums, stream);
  // dx = (softmax(x_r) - onehot(t_r)) * g inv_n, one thread per element (dx contiguous [rows, c]).
  launch_line_elements<1>(
      rows, c,
      [=] ENGINE_KERNEL(int64_t r, int64_t j, const int64_t* off) {
        const T scale = T(double(g[0]) * inv_n);
        const T y = softmax_at(x[off[0] + j], T(maxes[r]), sums[r]);
        dx[r * c + j] = (y - (j == t[r * ts] ? T(1) : T(0))) * scale;
      },
      stream);
}

template <typename T>
void launch_one_hot(const int64_t* t, int64_t ts, int64_t rows, int64_t c, T* out, Stream stream) {
  launch_elements(rows, [=] ENGINE_KERNEL(int64_t r) { out[r * c + t[r * ts]] = T(1); }, stream);
}

#define ENGINE_CUDA_SOFTMAX(T)                                                                                     \
  template void launch_softmax<T>(const StridedGeometry<2>&, const T*, int64_t, T*, int64_t, int64_t, bool,         \
                                  Stream);                                                                         \
  template void launch_softmax_backward<T>(const StridedGeometry<3>&, const T*, int64_t, const T*, int64_t, T*,     \
                                           int64_t, int64_t, bool, Stream);                                        \
  template void launch_softmax_chunked<T>(const StridedGeometry<2>&, const T*, int64_t, T*, int64_t, int64_t, bool, \
                                          const Chunks&, double*, Stream);                                         \
  template void launch_softmax_backward_chunked<T>(const StridedGeometry<3>&, const T*, int64_t, const T*, int64_t,  \
                                                   T*, int64_t, int64_t, bool, const Chunks&, double*, Stream);     \
  template void launch_cross_entropy<T>(const T*, int64_t, int64_t, int64_t, int64_t, const int64_t*, int64_t,      \
                                        double*, T*, Stream);                                                      \
  template void launch_cross_entropy_backward<T>(const T*, int64_t, int64_t, int64_t, int64_t, const int64_t*,      \
                                                 int64_t, const T*, double, T*, Stream);                           \
  template void launch_cross_entropy_chunked<T>(const StridedGeometry<1>&, const T*, const int64_t*, int64_t,       \
                                                const Chunks&, double*, double*, T*, Stream);                      \
  template void launch_cross_entropy_backward_chunked<T>(const StridedGeometry<1>&, const T*, const int64_t*,       \
                                                         int64_t, const T*, double, T*, const Chunks&, double*,    \
                                                         Stream);                                                  \
  template void launch_one_hot<T>(const int64_t*, int64_t, int64_t, int64_t, T*, Stream);
ENGINE_CUDA_SOFTMAX(float)
ENGINE_CUDA_SOFTMAX(double)
#undef ENGINE_CUDA_SOFTMAX

}  // namespace engine::cuda
