// random.h (cuda): randn / rand drawn directly on a CUDA device.
//
// Same contract as engine::randn / engine::rand (tensor.h): element i of the result is
// normal_at(gen.seed, gen.offset + i) (resp. uniform_at), and gen.offset advances by numel, so
//   cuda::randn(shape, g1, opts(f32, Device::cuda(0))).to(Device::cpu())
// equals randn(shape, g2) for two generators in the same state (Note [counter-based RNG]).
// engine::randn itself still draws on the CPU only; once it dispatches here for CUDA options,
// user code never needs to call this directly.
#pragma once
#include "tensor/tensor.h"

namespace engine::cuda {

// options.device must be a CUDA device; dtype f32 or f64. Asynchronous on the compute stream.
Tensor randn(const Dims& sizes, Generator& gen, TensorOptions options);
Tensor rand(const Dims& sizes, Generator& gen, TensorOptions options);

}  // namespace engine::cuda
