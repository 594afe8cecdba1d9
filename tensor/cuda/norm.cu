// norm.cu: layer_norm and group_norm kernels with the portable row bodies of
// tensor/kernels/norm.h (the ones the CPU calls).
//
// Normalised rows are contiguous, so every row of 8 or more values is cut into interleaved chunks
// (chunks.h: chunk c reads values c, c + C, ..., so a warp's loads coalesce): one thread per
// (row, chunk) writes partial sums in double, a second launch combines each row's partials in
// chunk order. The statistics stay two passes (the mean, then the sum of squared deviations from
// it, centred in T as the CPU's row_moments), and the output is written one thread per element
// (kernels/norm.h's element forms of the row bodies). Shorter rows: one thread per row runs the
// CPU's row body in the CPU's order. Parameter gradients: per-(chunk, column) or per-(sample,
// channel) partial sums in double, combined in a second launch in a fixed order (deterministic,
// no atomics).
#include "tensor/cuda/chunks.h"
#include "tensor/cuda/launch.cuh"
#include "tensor/cuda/norm_launch.h"
#include "tensor/kernels/norm.h"

namespace engine::cuda {

template <typename T>
void launch_norm_forward(const NormShape& s, const T* x, const T* w, const T* b, T* y, double* mean, double* rstd,
                         Stream stream) {
  const int64_t k = s.cg * s.hw;
  launch_elements(
      s.rows,
      [=] ENGINE_KERNEL(int64_t r) {
        const int64_t first = (r % s.groups) * s.cg;  // first channel of this row
        kernels::row_moments(x + r * k, k, s.eps, &mean[r], &rstd[r]);
        kernels::norm_forward_row(x + r * k, y + r * k, s.cg, s.hw, w ? w + first : nullptr, b ? b + first : nullptr,
                                  mean[r], rstd[r]);
      },
      stream);
}

template <typename T>
void launch_norm_backward_dx(const NormShape& s, const T* g, const T* x, const T* w, const double* mean,
                             const double* rstd, T* dx, Stream stream) {
  const int64_t k = s.cg * s.hw;
  launch_elements(
      s.rows,
      [=] ENGINE_KERNEL(int64_t r) {
        kernels::norm_backward_row(g + r * k, x + r * k, dx + r * k, s.cg, s.hw, w ? w + (r % s.groups) * s.cg : nullptr,
                                   mean[r], rstd[r]);
      },
      stream);
}

template <typename T>
void launch_norm_forward_chunked(const NormShape& s, const T* x, const T* w, const T* b, T* y, double* mean,
                                 double* rstd, const Chunks& ch, double* scratch, Stream stream) {
  const int64_t k = s.cg * s.hw, rows = s.rows, n_chunks = ch.n_chunks;
  double* part = scratch;  // [rows * n_chunks], chunk_slot order
  // Pass 1: sums of x -> the means.
  launch_elements(
      n_chunks * rows,
      [=] ENGINE_KERNEL(int64_t i) {
        const ChunkSpan sp = chunk_span(ch, i);
        const T* xr = x + sp.unit * k;
        double acc = 0;
        for (int64_t j = sp.begin; j < sp.end; j += sp.step) acc += double(xr[j]);
        part[i] = acc;
      },
      stream);
  launch_elements(
      rows,
      [=] ENGINE_KERNEL(int64_t r) {
        mean[r] = combine_chunks(ch, part, r, [](double a, double b) { return a + b; }) / double(k);
      },
      stream);
  // Pass 2: squared deviations (centred in T as row_moments) -> rstd.
  launch_elements(
      n_chunks * rows,
      [=] ENGINE_KERNEL(int64_t i) {
        const ChunkSpan sp = chunk_span(ch, i);
        const T* xr = x + sp.unit * k;
        const kernels::Centre<T> centre(mean[sp.unit]);
        double acc = 0;
        for (int64_t j = sp.begin; j < sp.end; j += sp.step) {
          const T d = centre(xr[j]);
          acc += double(T(d * d));
        }
        part[i] = acc;
      },
      stream);
  const double eps = s.eps;
  launch_elements(
      rows,
      [=] ENGINE_KERNEL(int64_t r) {
        const double q = combine_chunks(ch, part, r, [](double a, double b) { return a + b; });
        rstd[r] = 1.0 / sqrt(q / double(k) + eps);
      },
      stream);
  launch_elements(
      rows * k,
      [=] ENGINE_KERNEL(int64_t i) {
        const int64_t r = i / k, j = i % k;
        const int64_t first = (r % s.groups) * s.cg;
        const kernels::Centre<T> centre(mean[r]);
        y[i] = kernels::norm_forward_at(x[i], j, s.hw, w ? w + first : nullptr, b ? b + first : nullptr, centre,
                                        rstd[r]);
      },
      stream);
}

template <typename T>
void launch_norm_backward_dx_chunked(const NormShape& s, const T* g, const T* x, const T* w, const double* mean,
                                     const double* rstd, T* dx, const Chunks& ch, double* scratch, Stream stream) {
  const int64_t k = s.cg * s.hw, rows = s.rows, n_chunks = ch.n_chunks;
  double* part_g = scratch;                      // [rows * n_chunks]: partial sum(gw), chunk_slot order
  double* part_gx = part_g + n_chunks * rows;    // the same for sum(gw (x - mu))
  double* sums = part_gx + n_chunks * rows;      // [rows, 2]: sum(gw), sum(gw (x - mu))
  launch_elements(
      n_chunks * rows,
      [=] ENGINE_KERNEL(int64_t i) {
        const ChunkSpan sp = chunk_span(ch, i);
        const int64_t r = sp.unit;
        const T* wr = w ? w + (r % s.groups) * s.cg : nullptr;
        const kernels::Centre<T> centre(mean[r]);
        double sg = 0, sgx = 0;
        for (int64_t j = sp.begin; j < sp.end; j += sp.step)
          kernels::norm_backward_terms(g[r * k + j], x[r * k + j], j, s.hw, wr, centre, &sg, &sgx);
        part_g[i] = sg;
        part_gx[i] = sgx;
      },
      stream);
  launch_elements(
      rows,
      [=] ENGINE_KERNEL(int64_t r) {
        const auto plus = [](double a, double b) { return a + b; };
        sums[2 * r] = combine_chunks(ch, part_g, r, plus);
        sums[2 * r + 1] = combine_chunks(ch, part_gx, r, plus);
      },
      stream);
  launch_elements(
      rows * k,
      [=] ENGINE_KERNEL(int64_t i) {
        const int64_t r = i / k, j = i % k;
        const T* wr = w ? w + (r % s.groups) * s.cg : nullptr;
        const kernels::Centre<T> centre(mean[r]);
        dx[i] = kernels::norm_backward_at(g[i], x[i], j, s.hw, wr, centre, rstd[r], sums[2 * r], sums[2 * r + 1],
                                          double(k));
      },
      stream);
}

template <typename T>
void launch_layer_norm_param_grads(const NormShape& s, const T* g, const T* x, const double* mean,
                                   const double* rstd, double* partial, int64_t chunk, int64_t n_chunks, T* dw, T* db,
                                   Stream stream) {
  const int64_t k = s.cg, rows = s.rows;
  launch_elements(
      n_chunks * k,
      [=] ENGINE_KERNEL(int64_t i) {
        const int64_t c = i / k, j = i % k;
        const int64_t r0 = c * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
        kernels::norm_column_sums(g, x, k, j, r0, r1, mean, rstd, &partial[2 * i], &partial[2 * i + 1]);
      },
      stream);
  launch_elements(
      k,
      [=] ENGINE_KERNEL(int64_t j) {
        double sw = 0, sb = 0;
        for (int64_t c = 0; c < n_chunks; ++c) {
          sw += partial[2 * (c * k + j)];
          sb += partial[2 * (c * k + j) + 1];
        }
        if (dw) dw[j] = T(sw);
        if (db) db[j] = T(sb);
      },
      stream);
}

template <typename T>
void launch_group_norm_param_grads(const NormShape& s, const T* g, const T* x, const double* mean,
                                   const double* rstd, double* partial, T* dw, T* db, Stream stream) {
  const int64_t channels = s.groups * s.cg, samples = s.rows / s.groups, k = s.cg * s.hw;
  launch_elements(
      samples * channels,
      [=] ENGINE_KERNEL(int64_t i) {
        const int64_t n = i / channels, ch = i % channels;
        const int64_t r = n * s.groups + ch / s.cg;  // the row holding this channel
        const int64_t at = r * k + (ch % s.cg) * s.hw;
        const kernels::Centre<T> centre(mean[r]);
        double sg, sgx;
        kernels::run_sums(g + at, x + at, s.hw, centre, &sg, &sgx);
        partial[2 * i] = sgx * rstd[r];
        partial[2 * i + 1] = sg;
      },
      stream);
  launch_elements(
      channels,
      [=] ENGINE_KERNEL(int64_t ch) {
        double sw = 0, sb = 0;
        for (int64_t n = 0; n < samples; ++n) {
          sw += partial[2 * (n * channels + ch)];
          sb += partial[2 * (n * channels + ch) + 1];
        }
        if (dw) dw[ch] = T(sw);
        if (db) db[ch] = T(sb);
      },
      stream);
}

#define ENGINE_CUDA_NORM(T)                                                                                          \
  template void launch_norm_forward<T>(const NormShape&, const T*, const T*, const T*, T*, double*, double*, Stream); \
  template void launch_norm_backward_dx<T>(const NormShape&, const T*, const T*, const T*, const double*,            \
                                           const double*, T*, Stream);                                               \
  template void launch_norm_forward_chunked<T>(const NormShape&, const T*, const T*, const T*, T*, double*, double*,  \
                                               const Chunks&, double*, Stream);                                      \
  template void launch_norm_backward_dx_chunked<T>(const NormShape&, const T*, const T*, const T*, const double*,    \
                                                   const double*, T*, const Chunks&, double*, Stream);               \
  template void launch_layer_norm_param_grads<T>(const NormShape&, const T*, const T*, const double*, const double*, \
                                                 double*, int64_t, int64_t, T*, T*, Stream);                         \
  template void launch_group_norm_param_grads<T>(const NormShape&, const T*, const T*, const double*, const double*, \
                                                 double*, T*, T*, Stream);
ENGINE_CUDA_NORM(float)
ENGINE_CUDA_NORM(double)
#undef ENGINE_CUDA_NORM

}  // namespace engine::cuda
