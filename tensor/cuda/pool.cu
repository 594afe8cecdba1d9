// pool.cu: max_pool2d / avg_pool2d, one thread per output pixel over tensor/kernels/pool.h (the
// CPU loop's own per-pixel bodies, so both devices sum the same terms in the same order).
#include "tensor/cuda/launch.cuh"
#include "tensor/cuda/pool_launch.h"

namespace engine::cuda {

template <typename T>
void launch_max_pool2d(const T* x, T* out, int64_t planes, const kernels::PoolGeometry& g, Stream stream) {
  const kernels::PoolGeometry geo = g;
  launch_elements(
      planes * geo.ho * geo.wo,
      [=] ENGINE_KERNEL(int64_t e) {
        const int64_t j = e % geo.wo, rest = e / geo.wo, i = rest % geo.ho, pl = rest / geo.ho;
        out[e] = kernels::max_pool_at(x + pl * geo.h * geo.w, geo, i, j);
      },
      stream);
}

template <typename T>
void launch_avg_pool2d(const T* x, T* out, int64_t planes, const kernels::PoolGeometry& g, bool count_include_pad,
                       Stream stream) {
  const kernels::PoolGeometry geo = g;
  launch_elements(
      planes * geo.ho * geo.wo,
      [=] ENGINE_KERNEL(int64_t e) {
        const int64_t j = e % geo.wo, rest = e / geo.wo, i = rest % geo.ho, pl = rest / geo.ho;
        out[e] = kernels::avg_pool_at(x + pl * geo.h * geo.w, geo, count_include_pad, i, j);
      },
      stream);
}

template void launch_max_pool2d<float>(const float*, float*, int64_t, const kernels::PoolGeometry&, Stream);
template void launch_max_pool2d<double>(const double*, double*, int64_t, const kernels::PoolGeometry&, Stream);
template void launch_avg_pool2d<float>(const float*, float*, int64_t, const kernels::PoolGeometry&, bool, Stream);
template void launch_avg_pool2d<double>(const double*, double*, int64_t, const kernels::PoolGeometry&, bool, Stream);

}  // namespace engine::cuda
