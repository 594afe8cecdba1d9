// random.cpp (cuda): the Tensor-level side of the GPU random draws (random.h).
#include "tensor/cuda/random.h"

#include "tensor/cuda/device.h"
#include "tensor/cuda/random_launch.h"

namespace engine::cuda {

namespace {

Tensor draw(const char* op, DrawKind kind, const Dims& sizes, int64_t high, Generator& gen, TensorOptions o) {
  check_device(o.device, op);
  Tensor t = empty(sizes, o);
  const int64_t n = t.numel();
  if (n > 0) {
    DeviceGuard guard(o.device);
    launch_draw(kind, t.raw_data(), int(o.dtype), int(dtype_size(o.dtype)), n, gen.seed, gen.offset, high,
                compute_stream(o.device));
  }
  gen.offset += uint64_t(n);
  return t;
}

}  // namespace

Tensor randn(const Dims& sizes, Generator& gen, TensorOptions o) {
  return draw("cuda::randn", DrawKind::normal, sizes, 0, gen, o);
}

Tensor rand(const Dims& sizes, Generator& gen, TensorOptions o) {
  return draw("cuda::rand", DrawKind::uniform, sizes, 0, gen, o);
}

Tensor randint(const Dims& sizes, int64_t high, Generator& gen, TensorOptions o) {
  ENGINE_CHECK(high > 0, "cuda::randint: high must be positive, got {}", high);
  return draw("cuda::randint", DrawKind::integer, sizes, high, gen, o);
}

}  // namespace engine::cuda
