// The fused ops on CUDA (tensor/cuda/fused.cu) against the CPU ops (tests/test_fused.cpp checks
// those against PyTorch and finite differences):
//   - bias_act: forward, backward and double backward (check_op) for lrelu / relu / linear, with
//     and without bias and clamp, bias along dim 1 and the last dim, f32 and f64;
//   - AdamW: three steps of nn::AdamW on a parameter store materialized on cuda:0 against the
//     same steps on the CPU.
// Tolerances hold on a real GPU: bias_act is one rounding per add / mul in both (rtol 1e-5 f32,
// 1e-12 f64: the bias gradient's sum may run in another order); the AdamW update may be
// FMA-contracted by nvcc (a few ulp of the double expression, then rounded to f32): rtol 1e-5
// f32 (1e-12 f64) with a small atol for elements near 0.
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/grad_mode.h"
#include "nn/adamw.h"
#include "tests/gpu_fixtures.h"

using namespace engine;
using gpu_test::check_close;
using gpu_test::check_op;
using gpu_test::kGpu;

namespace {

Tensor leaf(const Dims& shape, uint64_t seed, DType dt) {
  Generator gen(seed);
  return randn(shape, gen, opts(dt)).requires_grad_(true);
}

}  // namespace

TEST_CASE("gpu bias_act: forward, backward and double backward equal the CPU") {
  if (gpu_test::no_device()) return;
  const double s2 = std::sqrt(2.0);
  for (DType dt : {DType::f32, DType::f64}) {
    const double rtol = dt == DType::f32 ? 1e-5 : 1e-12, atol = dt == DType::f32 ? 1e-6 : 1e-13;
    const std::string sfx = dt == DType::f32 ? " f32" : " f64";
    const Tensor x = leaf({2, 5, 4, 3}, 1, dt), b = leaf({5}, 2, dt);
    check_op("lrelu dim 1" + sfx, {x, b},
             [&](const TensorList& in) { return bias_act(in[0], in[1], 1, BiasActKind::lrelu, 0.2, s2); }, rtol, atol,
             true);
    check_op("lrelu clamp" + sfx, {x, b},
             [&](const TensorList& in) { return bias_act(in[0], in[1], 1, BiasActKind::lrelu, 0.2, s2, 1.0); }, rtol,
             atol, true);
    check_op("relu gain" + sfx, {x, b},
             [&](const TensorList& in) { return bias_act(in[0], in[1], 1, BiasActKind::relu, 0.0, 2.0); }, rtol, atol,
             true);
    const Tensor xl = leaf({3, 4, 6}, 3, dt), bl = leaf({6}, 4, dt);
    check_op("linear last dim" + sfx, {xl, bl},
             [&](const TensorList& in) { return bias_act(in[0], in[1], -1, BiasActKind::linear, 0.2, 0.5); }, rtol,
             atol, true);
    check_op("lrelu no bias" + sfx, {xl},
             [&](const TensorList& in) { return bias_act(in[0], Tensor(), 1, BiasActKind::lrelu, 0.2, s2); }, rtol,
             atol, true);
    // A transposed (non-contiguous) input: the op makes it contiguous on the device.
    check_op("lrelu transposed" + sfx, {xl, leaf({4}, 5, dt)},
             [&](const TensorList& in) {
               return bias_act(transpose(in[0], 1, 2), in[1], 2, BiasActKind::lrelu, 0.2, s2);
             },
             rtol, atol, true);
  }
}

namespace {

struct Pair : nn::Module {
  nn::Parameter& a;
  nn::Parameter& b;
  Pair()
      : Module("Pair"),
        a(register_parameter("a", {64, 33}, nn::Init::zeros())),
        b(register_parameter("b", {17}, nn::Init::zeros(), 1.0, /*weight_decay=*/false)) {}
};

}  // namespace

TEST_CASE("gpu AdamW: steps on CUDA flat buffers equal the CPU steps") {
  if (gpu_test::no_device()) return;
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(dtype_name(dt));
    const double rtol = dt == DType::f32 ? 1e-5 : 1e-12, atol = dt == DType::f32 ? 1e-7 : 1e-15;
    Pair cpu_model, gpu_model;
    nn::ParameterStore cpu_store, gpu_store;
    cpu_store.materialize(cpu_model, 7, opts(dt));
    gpu_store.materialize(gpu_model, 7, opts(dt, kGpu));
    {
      // Random starting values, set after materialize (zeros init: fill_ runs on either device).
      autograd::NoGradGuard ng;
      Generator init(11);
      copy_(cpu_store.flat_params(), randn({cpu_store.numel()}, init, opts(dt)));
      copy_(gpu_store.flat_params(), cpu_store.flat_params().to(kGpu));
    }
    const nn::AdamWOptions o{0.01, 0.5, 0.99, 1e-8, 0.1};
    auto scale = [](const std::string& name) { return name == "b" ? 0.1 : 1.0; };
    nn::AdamW cpu_opt(cpu_store, o, scale), gpu_opt(gpu_store, o, scale);
    Generator gen(3);
    for (int step = 0; step < 3; ++step) {
      const Tensor g = randn({cpu_store.numel()}, gen, opts(dt));
      {
        autograd::NoGradGuard ng;
        copy_(cpu_store.flat_grads(), g);
        copy_(gpu_store.flat_grads(), g.to(kGpu));
      }
      cpu_opt.step();
      gpu_opt.step();
      CAPTURE(step);
      check_close("params", gpu_store.flat_params(), cpu_store.flat_params(), rtol, atol);
      check_close("exp_avg", gpu_opt.exp_avg(), cpu_opt.exp_avg(), rtol, atol);
      check_close("exp_avg_sq", gpu_opt.exp_avg_sq(), cpu_opt.exp_avg_sq(), rtol, atol);
    }
  }
}
