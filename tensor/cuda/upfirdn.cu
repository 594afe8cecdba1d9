// upfirdn.cu: upfirdn2d's kernels, one thread per output pixel, over the per-pixel forms of
// tensor/kernels/upfirdn.h (upfirdn_2d_at, upfirdn_1d). They add the same terms in the same order
// as the CPU's row form (taps in increasing order), so GPU and CPU agree up to FMA contraction.
#include "tensor/cuda/launch.cuh"
#include "tensor/cuda/upfirdn_launch.h"

namespace engine::cuda {

template <typename T>
void launch_upfirdn2d_2d(const T* x, T* out, int64_t planes, const kernels::UpFirDnGeometry& g, const T* w,
                         Stream stream) {
  const kernels::UpFirDnGeometry geo = g;
  launch_elements(
      planes * geo.Ho * geo.Wo,
      [=] ENGINE_KERNEL(int64_t i) {
        const int64_t ox = i % geo.Wo, rest = i / geo.Wo, oy = rest % geo.Ho, plane = rest / geo.Ho;
        out[i] = kernels::upfirdn_2d_at(x + plane * geo.H * geo.W, w, geo, oy, ox);
      },
      stream);
}

template <typename T>
void launch_upfirdn2d_pass_x(const T* x, T* out, int64_t rows, int64_t W, int64_t Wo, const T* w, int64_t taps,
                             int64_t up, int64_t down, int64_t pad0, Stream stream) {
  launch_elements(
      rows * Wo,
      [=] ENGINE_KERNEL(int64_t i) {
        const int64_t ox = i % Wo, r = i / Wo;
        const kernels::TapRange rx = kernels::tap_range(ox, W, up, down, pad0, taps);
        out[i] = kernels::upfirdn_1d(x + r * W, int64_t(1), w, up, rx);
      },
      stream);
}

template <typename T>
void launch_upfirdn2d_pass_y(const T* x, T* out, int64_t planes, int64_t H, int64_t Ho, int64_t W, const T* w,
                             int64_t taps, int64_t up, int64_t down, int64_t pad0, Stream stream) {
  launch_elements(
      planes * Ho * W,
      [=] ENGINE_KERNEL(int64_t i) {
        const int64_t col = i % W, rest = i / W, oy = rest % Ho, plane = rest / Ho;
        const kernels::TapRange ry = kernels::tap_range(oy, H, up, down, pad0, taps);
        out[i] = kernels::upfirdn_1d(x + plane * H * W + col, W, w, up, ry);
      },
      stream);
}

#define ENGINE_CUDA_UPFIRDN(T)                                                                                 \
  template void launch_upfirdn2d_2d<T>(const T*, T*, int64_t, const kernels::UpFirDnGeometry&, const T*, Stream); \
  template void launch_upfirdn2d_pass_x<T>(const T*, T*, int64_t, int64_t, int64_t, const T*, int64_t, int64_t,   \
                                           int64_t, int64_t, Stream);                                             \
  template void launch_upfirdn2d_pass_y<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, const T*, int64_t,   \
                                           int64_t, int64_t, int64_t, Stream);
ENGINE_CUDA_UPFIRDN(float)
ENGINE_CUDA_UPFIRDN(double)
#undef ENGINE_CUDA_UPFIRDN

}  // namespace engine::cuda
