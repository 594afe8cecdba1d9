// random.cu: Philox4x32-10 draws on the GPU with the portable bodies of tensor/kernels/philox.h.
//
// Note [counter-based RNG] (philox.h): element i is a pure function of (seed, offset + i), so the
// GPU computes exactly the counters the CPU computes and the Philox bits are identical. The
// conversion to a value uses double precision on both devices (uniform: exact; normal: Box-Muller
// with log, sqrt and cos; integer: floor of uniform * high, exact), then is stored in the output
// dtype with kernels/convert.h's store_from_double, the CPU draw's own conversion.
#include "tensor/cuda/launch.cuh"
#include "tensor/cuda/random_launch.h"
#include "tensor/kernels/convert.h"
#include "tensor/kernels/philox.h"

namespace engine::cuda {

void launch_draw(DrawKind kind, void* out, int dtype_code, int element_size, int64_t n, uint64_t seed,
                 uint64_t offset, int64_t high, Stream stream) {
  char* base = static_cast<char*>(out);
  switch (kind) {
    case DrawKind::normal:
      launch_elements(
          n,
          [=] ENGINE_KERNEL(int64_t i) {
            kernels::store_from_double(base + i * element_size, dtype_code,
                                       kernels::normal_at(seed, offset + uint64_t(i)));
          },
          stream);
      break;
    case DrawKind::uniform:
      launch_elements(
          n,
          [=] ENGINE_KERNEL(int64_t i) {
            kernels::store_from_double(base + i * element_size, dtype_code,
                                       kernels::uniform_at(seed, offset + uint64_t(i)));
          },
          stream);
      break;
    case DrawKind::integer: {
      const double h = double(high);
      launch_elements(
          n,
          [=] ENGINE_KERNEL(int64_t i) {
            kernels::store_from_double(base + i * element_size, dtype_code,
                                       floor(kernels::uniform_at(seed, offset + uint64_t(i)) * h));
          },
          stream);
      break;
    }
  }
}

}  // namespace engine::cuda
