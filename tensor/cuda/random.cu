// random.cu: Philox4x32-10 draws on the GPU with the portable bodies of tensor/kernels/philox.h.
//
// Note [counter-based RNG] (philox.h): element i is a pure function of (seed, offset + i), so the
// GPU computes exactly the counters the CPU computes and the Philox bits are identical. The
// conversion to a value uses double precision on both devices (uniform: exact; normal: Box-Muller
// with log, sqrt and cos), then rounds to the output type.
#include "tensor/cuda/launch.cuh"
#include "tensor/cuda/random_launch.h"
#include "tensor/kernels/philox.h"

namespace engine::cuda {

template <typename T>
void launch_normal(T* out, int64_t n, uint64_t seed, uint64_t offset, Stream stream) {
  launch_elements(n, [=] ENGINE_KERNEL(int64_t i) { out[i] = T(kernels::normal_at(seed, offset + uint64_t(i))); },
                  stream);
}

template <typename T>
void launch_uniform(T* out, int64_t n, uint64_t seed, uint64_t offset, Stream stream) {
  launch_elements(n, [=] ENGINE_KERNEL(int64_t i) { out[i] = T(kernels::uniform_at(seed, offset + uint64_t(i))); },
                  stream);
}

template void launch_normal<float>(float*, int64_t, uint64_t, uint64_t, Stream);
template void launch_normal<double>(double*, int64_t, uint64_t, uint64_t, Stream);
template void launch_uniform<float>(float*, int64_t, uint64_t, uint64_t, Stream);
template void launch_uniform<double>(double*, int64_t, uint64_t, uint64_t, Stream);

}  // namespace engine::cuda
