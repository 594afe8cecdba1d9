// random.cpp (cuda): the Tensor-level side of the GPU random draws (random.h).
#include "tensor/cuda/random.h"

#include "tensor/cuda/device.h"
#include "tensor/cuda/random_launch.h"

namespace engine::cuda {

namespace {

template <typename Launch>
Tensor draw(const char* op, const Dims& sizes, Generator& gen, TensorOptions o, Launch launch) {
  check_device(o.device, op);
  ENGINE_CHECK(o.dtype == DType::f32 || o.dtype == DType::f64,
               "{}: unsupported dtype {} on CUDA (expected f32 or f64)", op, dtype_name(o.dtype));
  Tensor t = empty(sizes, o);
  const int64_t n = t.numel();
  DeviceGuard guard(o.device);
  const Stream stream = compute_stream(o.device);
  if (o.dtype == DType::f32)
    launch(t.data<float>(), n, gen.seed, gen.offset, stream);
  else
    launch(t.data<double>(), n, gen.seed, gen.offset, stream);
  gen.offset += uint64_t(n);
  return t;
}

}  // namespace

Tensor randn(const Dims& sizes, Generator& gen, TensorOptions o) {
  return draw("cuda::randn", sizes, gen, o, [](auto* out, int64_t n, uint64_t seed, uint64_t offset, Stream s) {
    launch_normal(out, n, seed, offset, s);
  });
}

Tensor rand(const Dims& sizes, Generator& gen, TensorOptions o) {
  return draw("cuda::rand", sizes, gen, o, [](auto* out, int64_t n, uint64_t seed, uint64_t offset, Stream s) {
    launch_uniform(out, n, seed, offset, s);
  });
}

}  // namespace engine::cuda
