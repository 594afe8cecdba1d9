// gpu_matmul_conv: matmul, bmm, linear and the conv2d family (conv2d, conv_transpose2d,
// conv2d_weight) on a CUDA device against the same ops on the CPU (docs/cuda.md "GEMM and
// convolution"); the CPU ops are tested against PyTorch and finite differences (test_matmul,
// test_conv, test_parity_conv, test_modconv).
//
// What is compared: forward, backward with a random upstream gradient, and double backward
// (the vector-Jacobian product of the gradients with random vectors, as R1 takes it), in f32 and
// f64, for
//   - matmul: 2-D, batched, broadcast batch (one side broadcast over a dim), 1-D operands on either
//     side, b without batch dims (the batch folds into the GEMM rows), transposed views (read with
//     the transpose flag); bmm; linear with and without bias, on a 3-D input;
//   - the conv2d family over geometries: 1x1 (direct, no im2col) and 1x1 stride 2, 3x3 with
//     padding, stride 2 with groups 2, dilation 2, groups = N batch-grouped (StyleGAN2's modulated
//     conv: one sample of N*C channels), with and without bias, and conv_transpose2d with
//     output_padding;
//   - the bf16 policy (MatmulPrecisionScope bf16): CUDA's bf16 x bf16 -> f32 cuBLASLt GEMM against
//     the CPU's bf16 policy (sgemm on the widened bf16 values), forward and backward.
//
// Tolerances, chosen to hold on a real GPU and not only in the emulated build (where the GEMM is
// the CPU's OpenBLAS and results agree to the last bit): cuBLASLt sums the k products in another
// order than OpenBLAS (tiles, split-k, FMA), so an element differs by up to about
// k * 2^-24 * sum|a b|. With randn operands and k <= ~100 that is below rtol 1e-4 / atol 1e-4 in
// f32 (also under bf16: the products of bf16 values are exact in f32, only the accumulation order
// differs) and rtol 1e-10 / atol 1e-10 in f64.
//
// Bias gradients and the gradients of broadcast operands are sums (sum over dims / sum_to), which
// need the CUDA reduction kernels; the test asks once whether sum() runs on CUDA and, if not,
// compares those cases forward only and says so.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "autograd/engine.h"
#include "tensor/cuda/conv.h"
#include "tensor/ops.h"
#include "tensor/precision.h"
#include "tests/gpu_fixtures.h"

using namespace engine;
using gpu_test::kGpu;

namespace {

constexpr double kRtol32 = 1e-4, kAtol32 = 1e-4, kRtol64 = 1e-10, kAtol64 = 1e-10;

double rtol_of(DType t) { return t == DType::f64 ? kRtol64 : kRtol32; }
double atol_of(DType t) { return t == DType::f64 ? kAtol64 : kAtol32; }

Tensor rnd(const Dims& shape, uint64_t seed, DType t, bool grad = true) {
  Generator gen(seed);
  Tensor x = randn(shape, gen, opts(t));
  if (grad) x.requires_grad_(true);
  return x;
}

// Whether sum over dims runs on CUDA in this build (the reduction kernels).
bool reductions_on_cuda() {
  static const bool ok = [] {
    try {
      (void)sum(zeros({2, 3}, opts(DType::f32, kGpu)), {0});
      return true;
    } catch (const Error&) {
      return false;
    }
  }();
  if (!ok) MESSAGE("sum() has no CUDA kernel in this build: gradients that need it are not compared");
  return ok;
}

// forward, backward and double backward of f on CUDA vs CPU. The double backward is the VJP of
// the first gradients with random vectors (autograd::grad with grad_outputs), which needs no
// reduction kernel.
void compare(const std::string& what, const std::vector<Tensor>& cpu_inputs,
             const std::function<Tensor(const std::vector<Tensor>&)>& f, DType dtype, bool backward = true) {
  using gpu_test::check_close;
  const double rtol = rtol_of(dtype), atol = atol_of(dtype);
  std::vector<Tensor> gpu_inputs;
  TensorList wrt_cpu, wrt_gpu;
  for (const Tensor& t : cpu_inputs) {
    gpu_inputs.push_back(t.defined() ? gpu_test::gpu_leaf(t) : Tensor());
    if (t.defined() && t.requires_grad() && backward) {
      wrt_cpu.push_back(t);
      wrt_gpu.push_back(gpu_inputs.back());
    }
  }
  const Tensor y_cpu = f(cpu_inputs), y_gpu = f(gpu_inputs);
  check_close(what + " forward", y_gpu, y_cpu, rtol, atol);
  if (wrt_cpu.empty()) return;
  Generator gen(99);
  const Tensor up = randn(y_cpu.sizes(), gen, opts(y_cpu.dtype()));
  const TensorList g_cpu = autograd::grad({y_cpu}, wrt_cpu, {up}, true, true);
  const TensorList g_gpu = autograd::grad({y_gpu}, wrt_gpu, {up.to(kGpu)}, true, true);
  TensorList outs_cpu, outs_gpu, vs_cpu, vs_gpu;
  for (size_t i = 0; i < g_cpu.size(); ++i) {
    check_close(what + " grad of input " + std::to_string(i), g_gpu[i], g_cpu[i], rtol, atol);
    if (!g_cpu[i].defined() || !g_cpu[i].requires_grad()) continue;
    const Tensor v = randn(g_cpu[i].sizes(), gen, opts(g_cpu[i].dtype()));
    outs_cpu.push_back(g_cpu[i]);
    outs_gpu.push_back(g_gpu[i]);
    vs_cpu.push_back(v);
    vs_gpu.push_back(v.to(kGpu));
  }
  if (outs_cpu.empty()) return;
  const TensorList gg_cpu = autograd::grad(outs_cpu, wrt_cpu, vs_cpu, false, true);
  const TensorList gg_gpu = autograd::grad(outs_gpu, wrt_gpu, vs_gpu, false, true);
  for (size_t i = 0; i < gg_cpu.size(); ++i)
    check_close(what + " double-backward grad of input " + std::to_string(i), gg_gpu[i], gg_cpu[i], rtol, atol);
}

const DType kDtypes[] = {DType::f32, DType::f64};

}  // namespace

TEST_CASE("gpu matmul: 2-D, batched, folded batch, 1-D operands, transposed views") {
  if (gpu_test::no_device()) return;
  for (DType t : kDtypes) {
    const std::string dtype = dtype_name(t);
    CAPTURE(dtype);
    const auto mm = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
    compare("2-D", {rnd({5, 7}, 1, t), rnd({7, 3}, 2, t)}, mm, t);
    compare("batched", {rnd({2, 3, 5, 7}, 3, t), rnd({2, 3, 7, 4}, 4, t)}, mm, t);
    compare("b without batch (folded rows)", {rnd({2, 3, 5, 7}, 5, t), rnd({7, 4}, 6, t)}, mm, t);
    compare("1-D x 2-D", {rnd({7}, 7, t), rnd({7, 3}, 8, t)}, mm, t);
    compare("2-D x 1-D", {rnd({5, 7}, 9, t), rnd({7}, 10, t)}, mm, t);
    compare("batched x 1-D", {rnd({2, 5, 7}, 11, t), rnd({7}, 12, t)}, mm, t);
    compare("1-D x 1-D", {rnd({7}, 13, t), rnd({7}, 14, t)}, mm, t);
    compare("transposed views", {rnd({7, 5}, 15, t), rnd({3, 7}, 16, t)},
            [](const std::vector<Tensor>& in) { return matmul(transpose(in[0], 0, 1), transpose(in[1], 0, 1)); }, t);
    compare("batched transposed b", {rnd({3, 5, 7}, 17, t), rnd({3, 4, 7}, 18, t)},
            [](const std::vector<Tensor>& in) { return matmul(in[0], transpose(in[1], 1, 2)); }, t);
    compare("bmm", {rnd({3, 5, 7}, 19, t), rnd({3, 7, 2}, 20, t)},
            [](const std::vector<Tensor>& in) { return bmm(in[0], in[1]); }, t);
    // An empty inner dimension: the product is zeros (no GEMM library call on the GPU).
    compare("k = 0", {rnd({5, 0}, 25, t, false), rnd({0, 3}, 26, t, false)}, mm, t, false);
    compare("k = 0, batched", {rnd({2, 5, 0}, 27, t, false), rnd({2, 0, 3}, 28, t, false)}, mm, t, false);
    // An expanded operand (stride 0 in its rows) has no BLAS layout: it is copied on the device.
    compare("expanded rows (copied)", {rnd({1, 7}, 23, t, false), rnd({7, 3}, 24, t)},
            [](const std::vector<Tensor>& in) { return matmul(expand(in[0], {5, 7}), in[1]); }, t);
    // Broadcast batch: a [2, 1, 5, 7] against b [3, 7, 4] -> [2, 3, 5, 4]; their gradients are
    // sums over the broadcast dims.
    compare("broadcast batch", {rnd({2, 1, 5, 7}, 21, t), rnd({3, 7, 4}, 22, t)}, mm, t, reductions_on_cuda());
  }
}

TEST_CASE("gpu linear: with and without bias") {
  if (gpu_test::no_device()) return;
  for (DType t : kDtypes) {
    const std::string dtype = dtype_name(t);
    CAPTURE(dtype);
    compare("linear", {rnd({2, 3, 6}, 31, t), rnd({4, 6}, 32, t)},
            [](const std::vector<Tensor>& in) { return linear(in[0], in[1], Tensor()); }, t);
    const bool reduce = reductions_on_cuda();
    compare("linear + bias", {rnd({2, 3, 6}, 33, t), rnd({4, 6}, 34, t), rnd({4}, 35, t, reduce)},
            [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, t, reduce);
    if (!reduce)
      compare("linear + bias (x, W gradients)", {rnd({2, 3, 6}, 33, t), rnd({4, 6}, 34, t), rnd({4}, 35, t, false)},
              [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, t);
  }
}

namespace {

struct Geometry {
  const char* name;
  int64_t n, cin, h, w, cout, kh, kw, stride, pad, dil, groups;
};
const Geometry kGeometries[] = {
    {"1x1 direct", 2, 3, 5, 6, 4, 1, 1, 1, 0, 1, 1},
    {"1x1 stride 2 groups 2", 2, 4, 6, 7, 2, 1, 1, 2, 0, 1, 2},
    {"3x3 pad 1", 2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1},
    {"3x3 stride 2 pad 1 groups 2", 3, 4, 9, 8, 6, 3, 3, 2, 1, 1, 2},
    {"3x3 dilation 2 pad 2", 1, 2, 9, 9, 3, 3, 3, 1, 2, 2, 1},
    {"batch-grouped (groups = N = 3)", 1, 6, 6, 5, 9, 3, 3, 1, 1, 1, 3},
};

Conv2dParams params_of(const Geometry& g) {
  Conv2dParams p;
  p.stride_h = p.stride_w = g.stride;
  p.pad_h = p.pad_w = g.pad;
  p.dilation_h = p.dilation_w = g.dil;
  p.groups = g.groups;
  return p;
}

}  // namespace

TEST_CASE("gpu conv2d family: geometries, f32 and f64, forward / backward / double backward") {
  if (gpu_test::no_device()) return;
  const bool reduce = reductions_on_cuda();
  for (DType t : kDtypes) {
    for (const Geometry& g : kGeometries) {
      const std::string dtype = dtype_name(t);
      CAPTURE(dtype);
      CAPTURE(g.name);
      const Conv2dParams p = params_of(g);
      const Tensor x = rnd({g.n, g.cin, g.h, g.w}, 41, t), w = rnd({g.cout, g.cin / g.groups, g.kh, g.kw}, 42, t);
      compare(std::string("conv2d ") + g.name, {x, w},
              [p](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], Tensor(), p); }, t);
      compare(std::string("conv2d + bias ") + g.name, {x, w, rnd({g.cout}, 43, t, reduce)},
              [p](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], p); }, t);
      // conv_transpose2d of a conv2d-output-shaped input, output_padding up to stride - 1.
      const int64_t ho = (g.h + 2 * g.pad - g.dil * (g.kh - 1) - 1) / g.stride + 1;
      const int64_t wo = (g.w + 2 * g.pad - g.dil * (g.kw - 1) - 1) / g.stride + 1;
      const int64_t op = g.stride - 1;
      compare(std::string("conv_transpose2d + bias ") + g.name,
              {rnd({g.n, g.cout, ho, wo}, 44, t), w, rnd({g.cin}, 45, t, reduce)},
              [p, op](const std::vector<Tensor>& in) { return conv_transpose2d(in[0], in[1], in[2], p, 0, op); }, t);
      compare(std::string("conv2d_weight ") + g.name, {x, rnd({g.n, g.cout, ho, wo}, 46, t)},
              [p, g](const std::vector<Tensor>& in) { return conv2d_weight(in[0], in[1], g.kh, g.kw, p); }, t);
    }
  }
}

TEST_CASE("gpu conv2d family: column buffers in chunks of one sample") {
  if (gpu_test::no_device()) return;
  const int64_t previous = cuda::set_column_budget(1);
  for (DType t : kDtypes) {
    const std::string dtype = dtype_name(t);
    CAPTURE(dtype);
    const Geometry& g = kGeometries[3];  // 3x3 stride 2 pad 1 groups 2, 3 samples
    const Conv2dParams p = params_of(g);
    compare("chunked conv2d + bias", {rnd({g.n, g.cin, g.h, g.w}, 61, t), rnd({g.cout, g.cin / g.groups, 3, 3}, 62, t),
                                      rnd({g.cout}, 63, t)},
            [p](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], p); }, t);
  }
  cuda::set_column_budget(previous);
}

TEST_CASE("gpu bf16 policy: cuBLASLt bf16 GEMMs vs the CPU bf16 policy") {
  if (gpu_test::no_device()) return;
  const DType t = DType::f32;
  const auto in_bf16 = [](std::function<Tensor(const std::vector<Tensor>&)> f) {
    return [f](const std::vector<Tensor>& in) {
      MatmulPrecisionScope s(MatmulPrecision::bf16);
      return f(in);
    };
  };
  compare("bf16 matmul", {rnd({2, 5, 40}, 51, t), rnd({40, 6}, 52, t)},
          in_bf16([](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); }), t);
  compare("bf16 bmm", {rnd({3, 5, 40}, 53, t), rnd({3, 40, 4}, 54, t)},
          in_bf16([](const std::vector<Tensor>& in) { return bmm(in[0], in[1]); }), t);
  compare("bf16 linear", {rnd({4, 40}, 55, t), rnd({6, 40}, 56, t)},
          in_bf16([](const std::vector<Tensor>& in) { return linear(in[0], in[1], Tensor()); }), t);
  for (const Geometry& g : kGeometries) {
    CAPTURE(g.name);
    const Conv2dParams p = params_of(g);
    compare(std::string("bf16 conv2d ") + g.name,
            {rnd({g.n, g.cin, g.h, g.w}, 57, t), rnd({g.cout, g.cin / g.groups, g.kh, g.kw}, 58, t)},
            in_bf16([p](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], Tensor(), p); }), t);
  }
  // The bf16 result really is not the f32 one (the policy reached the CUDA GEMM).
  const Tensor a = rnd({8, 64}, 59, t, false).to(kGpu), b = rnd({64, 8}, 60, t, false).to(kGpu);
  Tensor y16;
  {
    MatmulPrecisionScope s(MatmulPrecision::bf16);
    y16 = matmul(a, b);
  }
  const std::vector<double> u = y16.to(Device::cpu()).to_vector(), v = matmul(a, b).to(Device::cpu()).to_vector();
  double gap = 0;
  for (size_t i = 0; i < u.size(); ++i) gap = std::max(gap, std::fabs(u[i] - v[i]));
  CHECK(gap > 1e-3);
}

TEST_CASE("gpu matmul: errors name the op") {
  if (gpu_test::no_device()) return;
  const Tensor a = zeros({2, 3}, opts(DType::f32, kGpu)), b = zeros({3, 2}, opts(DType::f32));
  CHECK_THROWS_WITH(matmul(a, b), doctest::Contains("matmul: device mismatch"));
  CHECK_THROWS_WITH(matmul(a, zeros({3, 2}, opts(DType::f64, kGpu))), doctest::Contains("matmul: dtype mismatch"));
}
