// norm.cu: layer_norm and group_norm kernels with the portable row bodies of
// tensor/kernels/norm.h (the ones the CPU calls): one thread per normalised row computes the
// row's mean and rstd (two passes, double) and writes the row, in the CPU's order. Parameter
// gradients: per-(chunk, column) or per-(sample, channel) partial sums in double, combined in a
// second launch in a fixed order (deterministic, no atomics).
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
  template void launch_layer_norm_param_grads<T>(const NormShape&, const T*, const T*, const double*, const double*, \
                                                 double*, int64_t, int64_t, T*, T*, Stream);                         \
  template void launch_group_norm_param_grads<T>(const NormShape&, const T*, const T*, const double*, const double*, \
                                                 double*, T*, T*, Stream);
ENGINE_CUDA_NORM(float)
ENGINE_CUDA_NORM(double)
#undef ENGINE_CUDA_NORM

}  // namespace engine::cuda
