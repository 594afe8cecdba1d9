// conv.cu (cuda): the convolution kernels of conv_launch.h. One thread per output element; the
// arithmetic is the portable im2col / col2im bodies of tensor/kernels/im2col.h.
#include "tensor/cuda/conv_launch.h"
#include "tensor/cuda/launch.cuh"

namespace engine::cuda {

template <typename T>
void launch_im2col(const kernels::ConvShape& s, int64_t slices, const T* x, T* col, Stream stream) {
  const int64_t rows = s.channels * s.kernel_h * s.kernel_w, cols = s.out_h * s.out_w;
  const int64_t slice_in = s.channels * s.height * s.width, slice_col = rows * cols;
  launch_elements(
      slices * slice_col,
      [=] ENGINE_KERNEL(int64_t i) {
        const int64_t sl = i / slice_col, e = i - sl * slice_col;
        const int64_t r = e / cols, q = e - r * cols;
        col[i] = kernels::im2col_element(x + sl * slice_in, s, r, q);
      },
      stream);
}

template <typename T>
void launch_im2col_group_major(const kernels::ConvShape& s, int64_t samples, int64_t groups, const T* x, T* col,
                               Stream stream) {
  const int64_t rows = s.channels * s.kernel_h * s.kernel_w, cols = s.out_h * s.out_w;
  const int64_t slice_in = s.channels * s.height * s.width, per_row = samples * cols;
  launch_elements(
      groups * rows * per_row,
      [=] ENGINE_KERNEL(int64_t i) {
        const int64_t g = i / (rows * per_row), e = i - g * rows * per_row;
        const int64_t r = e / per_row, nq = e - r * per_row;
        const int64_t n = nq / cols, q = nq - n * cols;
        col[i] = kernels::im2col_element(x + (n * groups + g) * slice_in, s, r, q);
      },
      stream);
}

template <typename T>
void launch_col2im(const kernels::ConvShape& s, int64_t slices, int64_t groups, const T* col, const T* bias, T* x,
                   Stream stream) {
  const int64_t cols = s.out_h * s.out_w, slice_col = s.channels * s.kernel_h * s.kernel_w * cols;
  const int64_t plane = s.height * s.width, slice_in = s.channels * plane;
  launch_elements(
      slices * slice_in,
      [=] ENGINE_KERNEL(int64_t i) {
        const int64_t sl = i / slice_in, e = i - sl * slice_in;
        T v = kernels::col2im_element(col + sl * slice_col, cols, s, e);
        if (bias != nullptr) v += bias[(sl % groups) * s.channels + e / plane];
        x[i] = v;
      },
      stream);
}

template <typename T>
void launch_bias_fill(int64_t count, int64_t channels, int64_t inner, const T* bias, T* out, Stream stream) {
  launch_elements(count, [=] ENGINE_KERNEL(int64_t i) { out[i] = bias[(i / inner) % channels]; }, stream);
}

template void launch_im2col<float>(const kernels::ConvShape&, int64_t, const float*, float*, Stream);
template void launch_im2col<double>(const kernels::ConvShape&, int64_t, const double*, double*, Stream);
template void launch_im2col<uint16_t>(const kernels::ConvShape&, int64_t, const uint16_t*, uint16_t*, Stream);
template void launch_im2col_group_major<float>(const kernels::ConvShape&, int64_t, int64_t, const float*, float*,
                                              Stream);
template void launch_im2col_group_major<double>(const kernels::ConvShape&, int64_t, int64_t, const double*, double*,
                                               Stream);
template void launch_im2col_group_major<uint16_t>(const kernels::ConvShape&, int64_t, int64_t, const uint16_t*,
                                                 uint16_t*, Stream);
template void launch_col2im<float>(const kernels::ConvShape&, int64_t, int64_t, const float*, const float*, float*,
                                   Stream);
template void launch_col2im<double>(const kernels::ConvShape&, int64_t, int64_t, const double*, const double*,
                                    double*, Stream);
template void launch_bias_fill<float>(int64_t, int64_t, int64_t, const float*, float*, Stream);
template void launch_bias_fill<double>(int64_t, int64_t, int64_t, const double*, double*, Stream);

}  // namespace engine::cuda
