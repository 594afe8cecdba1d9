// The fused modulated_weight op on CUDA (launch_modulated_weight / launch_modulated_weight_grad in
// tensor/cuda/fused.cu) against the CPU op (tests/test_modulated_weight.cpp checks that against
// PyTorch, finite differences and the composite it replaced):
//   - forward and the fused first-order backward (check_op without double backward: no graph is
//     recorded, so the backward runs the fused gradient kernels), shared and batched kernels,
//     taps 1 and 3x3, demodulate on / off, transposed on / off, f32 and f64;
//   - the create_graph form of the backward and the double backward (check_op second order) on a
//     few configurations: the differentiable ops of modulated_weight_grad_ops, on the device;
//   - ModulatedConv2d (N = 2, 3x3, upsampling) and ModulatedLinear end to end on the device.
// Tolerances hold on a real GPU: every reduction runs in double in one thread, in the same order
// as on the CPU; the differences are FMA contraction and libm's sqrt / division (a few ulp of the
// double values, then one rounding to T): rtol 1e-5 / atol 1e-6 f32, rtol 1e-12 / atol 1e-13 f64.
// The double backward's composite runs f32 sums in another order on the device: rtol 1e-4 there.
#include <doctest/doctest.h>

#include <string>

#include "autograd/grad_mode.h"
#include "nn/modconv.h"
#include "nn/state_dict.h"
#include "tests/gpu_fixtures.h"

using namespace engine;
using gpu_test::check_close;
using gpu_test::check_op;
using gpu_test::kGpu;

namespace {

Tensor leaf(const Dims& shape, uint64_t seed, DType dt, double shift = 0) {
  Generator gen(seed);
  return add(randn(shape, gen, opts(dt)), shift).detach().requires_grad_(true);
}

ModulatedWeightParams params(bool batched, bool demod, bool transposed) {
  ModulatedWeightParams p;
  p.batched = batched;
  p.demodulate = demod;
  p.weight_gain = 0.37;
  p.transposed = transposed;
  return p;
}

}  // namespace

TEST_CASE("gpu modulated_weight: forward and fused backward equal the CPU") {
  if (gpu_test::no_device()) return;
  struct Shape {
    const char* name;
    Dims kernel;
    bool batched;
  };
  const Shape shapes[] = {{"shared 3x3", {6, 5, 3, 3}, false},
                          {"batched 3x3", {3, 6, 5, 3, 3}, true},
                          {"shared linear", {7, 5}, false},
                          {"batched 1x1", {3, 7, 5, 1, 1}, true}};
  for (DType dt : {DType::f32, DType::f64}) {
    const double rtol = dt == DType::f32 ? 1e-5 : 1e-12, atol = dt == DType::f32 ? 1e-6 : 1e-13;
    const std::string sfx = dt == DType::f32 ? " f32" : " f64";
    for (const Shape& sh : shapes) {
      const Tensor K = leaf(sh.kernel, 1, dt), s = leaf({3, 5}, 2, dt, 1.0);
      for (bool demod : {true, false})
        for (bool tr : {false, true}) {
          const ModulatedWeightParams p = params(sh.batched, demod, tr);
          check_op(std::string(sh.name) + (demod ? " demod" : " plain") + (tr ? " transposed" : "") + sfx, {K, s},
                   [p](const TensorList& in) { return modulated_weight(in[0], in[1], p); }, rtol, atol);
        }
    }
  }
}

TEST_CASE("gpu modulated_weight: create_graph backward and double backward equal the CPU") {
  if (gpu_test::no_device()) return;
  for (DType dt : {DType::f32, DType::f64}) {
    const double rtol = dt == DType::f32 ? 1e-4 : 1e-12, atol = dt == DType::f32 ? 1e-5 : 1e-13;
    const std::string sfx = dt == DType::f32 ? " f32" : " f64";
    const Tensor K = leaf({4, 3, 3, 3}, 3, dt), Kb = leaf({2, 4, 3, 3, 3}, 4, dt), s = leaf({2, 3}, 5, dt, 1.0);
    check_op("shared demod" + sfx, {K, s},
             [](const TensorList& in) { return modulated_weight(in[0], in[1], params(false, true, false)); }, rtol,
             atol, true);
    check_op("batched demod transposed" + sfx, {Kb, s},
             [](const TensorList& in) { return modulated_weight(in[0], in[1], params(true, true, true)); }, rtol, atol,
             true);
    check_op("shared plain" + sfx, {K, s},
             [](const TensorList& in) { return modulated_weight(in[0], in[1], params(false, false, false)); }, rtol,
             atol, true);
  }
}

TEST_CASE("gpu modulated_weight: ModulatedConv2d and ModulatedLinear on the device equal the CPU") {
  if (gpu_test::no_device()) return;
  nn::ModConvConfig c;
  c.in_channels = 4;
  c.out_channels = 5;
  c.kernel_size = 3;
  c.w_dim = 6;
  c.num_kernels = 2;
  c.upsample = true;
  nn::ModulatedConv2d cpu_conv(c), gpu_conv(c);
  nn::ModulatedLinear cpu_lin(4, 5, 6), gpu_lin(4, 5, 6);
  nn::ParameterStore sc, sg, lc, lg;
  sc.materialize(cpu_conv, 3, opts(DType::f32));
  sg.materialize(gpu_conv, 3, opts(DType::f32, kGpu));
  lc.materialize(cpu_lin, 4, opts(DType::f32));
  lg.materialize(gpu_lin, 4, opts(DType::f32, kGpu));
  {
    autograd::NoGradGuard ng;  // the same parameter values on both devices
    copy_(sg.flat_params(), sc.flat_params().to(kGpu));
    copy_(lg.flat_params(), lc.flat_params().to(kGpu));
  }
  const Tensor x = leaf({2, 4, 5, 5}, 6, DType::f32), w = leaf({2, 6}, 7, DType::f32);
  const Tensor xt = leaf({2, 7, 4}, 8, DType::f32);
  check_close("conv forward", gpu_conv.forward(x.detach().to(kGpu), w.detach().to(kGpu)),
              cpu_conv.forward(x.detach(), w.detach()), 1e-5, 1e-5);
  check_close("linear forward", gpu_lin.forward(xt.detach().to(kGpu), w.detach().to(kGpu)),
              cpu_lin.forward(xt.detach(), w.detach()), 1e-5, 1e-5);
}
