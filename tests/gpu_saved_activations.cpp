// bf16 saved activations on the device (Note [bf16 saved activations] in autograd/node.h).
//
// Under SavedActivationScope(bf16) MulBackward keeps bf16 copies of its operands, made on the
// device by the conversion kernel (kernels/convert.h) and widened there in backward. d/db sum(g a
// b) = g * bf16(a): one exactly rounded multiply of exactly rounded values, so the device must
// give the CPU's bits. The same run without the scope gives g * a, and the two differ (the packing
// happened on the device). Also: the bf16 copy is shared with a bf16 GEMM operand of the same
// tensor on the device (Note [shared bf16 copies]): the device arena holds one copy, not two.
#include <doctest/doctest.h>

#include "autograd/engine.h"
#include "tensor/memory/memory.h"
#include "tensor/ops.h"
#include "tensor/precision.h"
#include "tests/gpu_fixtures.h"

using namespace engine;
using gpu_test::kGpu;

namespace {

Tensor rnd(const Dims& shape, uint64_t seed) {
  Generator gen(seed);
  return randn(shape, gen, TensorOptions{});
}

// d/db sum(g * (a * b)) on `device`, the forward under the saved-activation dtype `saved`.
std::vector<double> mul_grad(const Tensor& a0, const Tensor& b0, const Tensor& g0, Device device, DType saved) {
  const Tensor a = a0.to(device), g = g0.to(device);
  const Tensor b = b0.to(device).detach().requires_grad_(true);
  Tensor y;
  {
    SavedActivationScope scope(saved);
    y = mul(a, b);
  }
  return autograd::grad({y}, {b}, {g})[0].to(Device::cpu()).to_vector();
}

}  // namespace

TEST_CASE("saved activations on cuda: packed operands give the CPU's bits") {
  if (gpu_test::no_device()) return;
  const Tensor a = rnd({96, 128}, 1), b = rnd({96, 128}, 2), g = rnd({96, 128}, 3);
  const std::vector<double> cpu16 = mul_grad(a, b, g, Device::cpu(), DType::bf16);
  const std::vector<double> gpu16 = mul_grad(a, b, g, kGpu, DType::bf16);
  const std::vector<double> gpu32 = mul_grad(a, b, g, kGpu, DType::f32);
  CHECK(gpu16 == cpu16);
  int64_t differs = 0;
  for (size_t i = 0; i < gpu16.size(); ++i) differs += gpu16[i] != gpu32[i];
  CHECK(differs > int64_t(gpu16.size()) / 2);
}

TEST_CASE("saved activations on cuda: one bf16 copy for a saved tensor and a GEMM operand") {
  if (gpu_test::no_device()) return;
  const int64_t rows = 256, k = 256, m = 8;
  const Tensor w = rnd({k, m}, 4).to(kGpu).requires_grad_(true);
  const Tensor x = mul(rnd({rows, k}, 5), 0.1).to(kGpu).requires_grad_(true);
  const int64_t before = memory::stats(kGpu).live;
  Tensor z;
  {
    SavedActivationScope saved(DType::bf16);
    MatmulPrecisionScope gemm(MatmulPrecision::bf16);
    z = matmul(exp(x), w);
  }
  const int64_t held = memory::stats(kGpu).live - before;
  INFO("held " << held << " bytes on the device; one bf16 copy of exp(x) is " << rows * k * 2);
  CHECK(held >= rows * k * 2);
  CHECK(held < rows * k * 2 + rows * k);
  const Tensor dx = autograd::grad({sum(z)}, {x})[0];
  CHECK(dx.device() == kGpu);
}
