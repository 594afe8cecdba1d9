// random.h (cuda): randn / rand / randint drawn directly on a CUDA device.
//
// Same contract as engine::randn / rand / randint (tensor.h), which dispatch here for CUDA
// options: element i of the result is normal_at(gen.seed, gen.offset + i) (resp. uniform_at, or
// floor(uniform_at * high)) stored in the requested dtype, and gen.offset advances by numel, so
//   randn(shape, g1, opts(f32, Device::cuda(0))).to(Device::cpu())
// equals randn(shape, g2) for two generators in the same state (Note [counter-based RNG]).
#pragma once
#include "tensor/tensor.h"

namespace engine::cuda {

// options.device must be a CUDA device; any dtype (stored as the CPU draw stores it).
// Asynchronous on the compute stream.
Tensor randn(const Dims& sizes, Generator& gen, TensorOptions options);
Tensor rand(const Dims& sizes, Generator& gen, TensorOptions options);
Tensor randint(const Dims& sizes, int64_t high, Generator& gen, TensorOptions options);

}  // namespace engine::cuda
