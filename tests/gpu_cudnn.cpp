// gpu_cudnn: the cuDNN convolution path (tensor/cuda/cudnn_conv.h, selected with
// ConvAlgorithmScope(ConvAlgorithm::cudnn), tensor/conv_algorithm.h; docs/cuda.md "cuDNN
// convolution") against the default im2col + GEMM path on the device and against the CPU ops
// (themselves tested against PyTorch and finite differences in test_conv / test_parity_conv).
//
// With cuDNN (a real build with ENGINE_CUDNN=ON, on a GPU):
//   - geometries: 1x1, 1x1 stride 2, 3x3 padding 1, 3x3 stride 2 + groups 2, dilation 2,
//     depthwise (groups = C), the batch-grouped modulated conv (one sample of N*C channels,
//     groups = N), 5x3 with stride (2, 1) and padding (2, 1); conv_transpose2d with
//     output_padding = stride - 1 in both dims (the largest the op allows);
//   - per geometry, f32 and f64: conv2d + bias, conv_transpose2d + bias and conv2d_weight under
//     cuDNN vs im2col on the device; then check_op (tests/gpu_fixtures.h) under cuDNN vs the CPU:
//     forward, backward and double backward (whose conv_transpose2d / conv2d_weight run through
//     cuDNN too). On "3x3 pad 1" in f32 each of the three directions must really have run in cuDNN
//     (cudnn_conv_calls), so a path that declines everything cannot pass;
//   - TF32 (MatmulPrecisionScope(tf32): CUDNN_TENSOR_OP_MATH) vs the CPU's f32;
//   - determinism: the same call twice gives the same bits, and the algorithm choice is cached;
//   - bf16 policy: cuDNN declines it (documented), the result is bit-identical to im2col's.
// Without cuDNN (the emulated device, or ENGINE_CUDNN=OFF): selecting cudnn makes each of the
// three ops on a CUDA tensor throw the documented "build with cuDNN" error naming the op, im2col
// still runs, and the trainer refuses train.conv_algorithm "cudnn" at start.
//
// Tolerances (hold on a real GPU; documented in docs/cuda.md):
//   f32 rtol 1e-4, atol 1e-4 and f64 rtol 1e-10, atol 1e-10: cuDNN's implicit-GEMM kernels sum
//   the k = Cin/G*kh*kw (or N*Ho*Wo for the weight gradient) products in another order than
//   OpenBLAS / cuBLASLt, with FMA: an element differs by about k * 2^-24 * sum|a b| (k <= ~130
//   here), as for gpu_matmul_conv.
//   TF32 rtol 1e-2, atol 1e-1: each input keeps 10 explicit mantissa bits (relative rounding
//   <= 2^-11), so a product is off by <= ~2^-10 |a b| and an output by <= 2^-10 sum|a b|; with
//   randn operands and k <= 130, sum|a b| stays under ~100, so |error| <= ~0.1 in the worst case
//   (typically far less).
#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "aurora/train_config.h"
#include "aurora/trainer.h"
#include "autograd/engine.h"
#include "tensor/conv_algorithm.h"
#include "tensor/cuda/cudnn_conv.h"
#include "tensor/ops.h"
#include "tensor/precision.h"
#include "tests/gpu_fixtures.h"

using namespace engine;
using gpu_test::contains;
using gpu_test::error_of;
using gpu_test::kGpu;

namespace {

constexpr double kRtol32 = 1e-4, kAtol32 = 1e-4, kRtol64 = 1e-10, kAtol64 = 1e-10;
constexpr double kRtolTf32 = 1e-2, kAtolTf32 = 1e-1;

double rtol_of(DType t) { return t == DType::f64 ? kRtol64 : kRtol32; }
double atol_of(DType t) { return t == DType::f64 ? kAtol64 : kAtol32; }

// True (saying so) when this build has no cuDNN path: the comparison tests have nothing to run.
bool no_cudnn() {
  if (cudnn_built()) return false;
  MESSAGE("SKIPPED: this build has no cuDNN (ENGINE_CUDNN=OFF or the emulated device); cuDNN comparisons not run");
  return true;
}

Tensor rnd(const Dims& shape, uint64_t seed, DType t, bool grad = true) {
  Generator gen(seed);
  Tensor x = randn(shape, gen, opts(t));
  if (grad) x.requires_grad_(true);
  return x;
}

struct Geometry {
  const char* name;
  int64_t n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, dil, groups;
};
const Geometry kGeometries[] = {
    {"1x1", 2, 4, 5, 6, 6, 1, 1, 1, 1, 0, 0, 1, 1},
    {"1x1 stride 2", 2, 4, 6, 7, 3, 1, 1, 2, 2, 0, 0, 1, 1},
    {"3x3 pad 1", 2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1},
    {"3x3 stride 2 pad 1 groups 2", 3, 4, 9, 8, 6, 3, 3, 2, 2, 1, 1, 1, 2},
    {"3x3 dilation 2 pad 2", 1, 2, 9, 9, 3, 3, 3, 1, 1, 2, 2, 2, 1},
    {"depthwise 3x3 (groups = C = 4)", 2, 4, 6, 6, 4, 3, 3, 1, 1, 1, 1, 1, 4},
    {"batch-grouped modconv (1 sample, 3 x 4 channels, groups 3)", 1, 12, 6, 5, 15, 3, 3, 1, 1, 1, 1, 1, 3},
    {"5x3 stride (2, 1) pad (2, 1)", 2, 3, 9, 7, 4, 5, 3, 2, 1, 2, 1, 1, 1},
};

Conv2dParams params_of(const Geometry& g) {
  Conv2dParams p;
  p.stride_h = g.sh, p.stride_w = g.sw;
  p.pad_h = g.ph, p.pad_w = g.pw;
  p.dilation_h = p.dilation_w = g.dil;
  p.groups = g.groups;
  return p;
}
int64_t out_h(const Geometry& g) { return (g.h + 2 * g.ph - g.dil * (g.kh - 1) - 1) / g.sh + 1; }
int64_t out_w(const Geometry& g) { return (g.w + 2 * g.pw - g.dil * (g.kw - 1) - 1) / g.sw + 1; }

using Op = std::function<Tensor(const std::vector<Tensor>&)>;

// The three ops of one geometry (with bias where the op takes one) and CPU inputs for each.
struct Case {
  std::string name;
  std::vector<Tensor> inputs;
  Op f;
};
std::vector<Case> cases_of(const Geometry& g, DType t) {
  const Conv2dParams p = params_of(g);
  const int64_t ho = out_h(g), wo = out_w(g), oph = g.sh - 1, opw = g.sw - 1;
  const Tensor x = rnd({g.n, g.cin, g.h, g.w}, 11, t), w = rnd({g.cout, g.cin / g.groups, g.kh, g.kw}, 12, t);
  const int64_t kh = g.kh, kw = g.kw;
  return {
      {std::string("conv2d + bias ") + g.name, {x, w, rnd({g.cout}, 13, t)},
       [p](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], p); }},
      {std::string("conv_transpose2d + bias ") + g.name, {rnd({g.n, g.cout, ho, wo}, 14, t), w, rnd({g.cin}, 15, t)},
       [p, oph, opw](const std::vector<Tensor>& in) { return conv_transpose2d(in[0], in[1], in[2], p, oph, opw); }},
      {std::string("conv2d_weight ") + g.name, {x, rnd({g.n, g.cout, ho, wo}, 16, t)},
       [p, kh, kw](const std::vector<Tensor>& in) { return conv2d_weight(in[0], in[1], kh, kw, p); }},
  };
}

Tensor run_with(ConvAlgorithm a, const Op& f, const std::vector<Tensor>& in) {
  ConvAlgorithmScope scope(a);
  autograd::NoGradGuard no_grad;
  return f(in);
}

std::vector<Tensor> on_gpu(const std::vector<Tensor>& cpu) {
  std::vector<Tensor> out;
  for (const Tensor& t : cpu) out.push_back(t.detach().to(kGpu));
  return out;
}

}  // namespace

TEST_CASE("gpu cudnn: without cuDNN, selecting it is a clear error") {
  if (gpu_test::no_device()) return;
  if (cudnn_built()) {
    MESSAGE("this build has cuDNN: the no-cuDNN errors do not apply");
    return;
  }
  const Geometry& g = kGeometries[2];
  for (const Case& c : cases_of(g, DType::f32)) {
    CAPTURE(c.name);
    const std::vector<Tensor> in = on_gpu(c.inputs);
    const std::string e = error_of([&] { (void)run_with(ConvAlgorithm::cudnn, c.f, in); });
    const std::string op = c.name.substr(0, c.name.find(' '));
    CHECK(contains(e, op + ": conv algorithm \"cudnn\""));
    CHECK(contains(e, "-DENGINE_CUDNN=ON"));
    if (gpu_test::emulated()) CHECK(contains(e, "emulated CUDA device"));
    // The default path still runs, and CPU tensors ignore the policy.
    CHECK(run_with(ConvAlgorithm::im2col, c.f, in).device().is_cuda());
    CHECK_NOTHROW((void)run_with(ConvAlgorithm::cudnn, c.f, c.inputs));
  }
  CHECK(cuda::cudnn_conv_calls() == 0);
  // The trainer refuses the config at start, naming the key.
  aurora::TrainConfig train;
  train.device = "cuda";
  train.conv_algorithm = "cudnn";
  CHECK(contains(error_of([&] { aurora::resolve_train_device(train, 1); }), "config.train.conv_algorithm"));
  train.conv_algorithm = "im2col";
  CHECK(aurora::resolve_train_device(train, 1) == kGpu);
}

TEST_CASE("gpu cudnn: a conv's backward runs under the algorithm its Node was recorded with") {
  if (gpu_test::no_device()) return;
  // Recorded under im2col, differentiated inside a cudnn scope: the backward convolutions keep
  // im2col (in a build without cuDNN the cudnn policy would throw), so the gradients equal the
  // ones taken outside any scope bit for bit.
  Generator gen(5);
  const Tensor x = randn({2, 3, 9, 9}, gen).to(kGpu).requires_grad_(true);
  const Tensor w = randn({4, 3, 3, 3}, gen).to(kGpu).requires_grad_(true);
  Conv2dParams p;
  p.stride_h = p.stride_w = 2;
  p.pad_h = p.pad_w = 1;
  const Tensor y = conv2d(x, w, Tensor(), p);
  const Tensor g = randn(y.sizes(), gen).to(kGpu);
  const TensorList plain = autograd::grad({y}, {x, w}, {g}, /*create_graph=*/false, /*allow_unused=*/false,
                                          /*retain_graph=*/true);
  TensorList scoped;
  {
    ConvAlgorithmScope cudnn(ConvAlgorithm::cudnn);
    scoped = autograd::grad({y}, {x, w}, {g});
  }
  CHECK(gpu_test::bytes_of(scoped[0]) == gpu_test::bytes_of(plain[0]));
  CHECK(gpu_test::bytes_of(scoped[1]) == gpu_test::bytes_of(plain[1]));
}

TEST_CASE("gpu cudnn: vs im2col on the device and vs the CPU, f32 and f64, forward / backward / double backward") {
  if (gpu_test::no_device()) return;
  if (no_cudnn()) return;
  for (DType t : {DType::f32, DType::f64}) {
    for (const Geometry& g : kGeometries) {
      const std::string dtype = dtype_name(t);
      CAPTURE(dtype);
      CAPTURE(g.name);
      const bool must_run = t == DType::f32 && std::string(g.name) == "3x3 pad 1";
      for (const Case& c : cases_of(g, t)) {
        CAPTURE(c.name);
        const std::vector<Tensor> in = on_gpu(c.inputs);
        const int64_t before = cuda::cudnn_conv_calls();
        const Tensor by_cudnn = run_with(ConvAlgorithm::cudnn, c.f, in);
        const bool ran = cuda::cudnn_conv_calls() > before;
        if (must_run) CHECK_MESSAGE(ran, "cuDNN declined a plain f32 3x3 convolution: ", c.name);
        if (!ran) MESSAGE("cuDNN declined (im2col ran): ", c.name, " ", dtype);
        const Tensor by_im2col = run_with(ConvAlgorithm::im2col, c.f, in);
        gpu_test::check_close(c.name + " cuDNN vs im2col", by_cudnn, by_im2col.to(Device::cpu()), rtol_of(t),
                              atol_of(t));
        ConvAlgorithmScope scope(ConvAlgorithm::cudnn);
        gpu_test::check_op(c.name + " cuDNN vs CPU", c.inputs, c.f, rtol_of(t), atol_of(t), /*second_order=*/true);
      }
    }
  }
}

TEST_CASE("gpu cudnn: TF32 (tensor-op math) vs the CPU's f32") {
  if (gpu_test::no_device()) return;
  if (no_cudnn()) return;
  MatmulPrecisionScope tf32(MatmulPrecision::tf32);
  ConvAlgorithmScope scope(ConvAlgorithm::cudnn);
  for (const Geometry& g : {kGeometries[2], kGeometries[3], kGeometries[6]}) {
    CAPTURE(g.name);
    for (const Case& c : cases_of(g, DType::f32))
      gpu_test::check_op(c.name + " TF32", c.inputs, c.f, kRtolTf32, kAtolTf32);
  }
}

TEST_CASE("gpu cudnn: deterministic algorithms, cached choices") {
  if (gpu_test::no_device()) return;
  if (no_cudnn()) return;
  for (DType t : {DType::f32, DType::f64}) {
    const std::string dtype = dtype_name(t);
    CAPTURE(dtype);
    for (const Case& c : cases_of(kGeometries[3], t)) {
      CAPTURE(c.name);
      const std::vector<Tensor> in = on_gpu(c.inputs);
      const Tensor first = run_with(ConvAlgorithm::cudnn, c.f, in);
      const int64_t cached = cuda::cudnn_cached_algorithms();
      const Tensor second = run_with(ConvAlgorithm::cudnn, c.f, in);
      CHECK(gpu_test::bytes_of(first) == gpu_test::bytes_of(second));
      CHECK(cuda::cudnn_cached_algorithms() == cached);  // the second call reused the choice
    }
  }
}

TEST_CASE("gpu cudnn: the bf16 policy falls back to im2col (bit-identical)") {
  if (gpu_test::no_device()) return;
  if (no_cudnn()) return;
  MatmulPrecisionScope bf16(MatmulPrecision::bf16);
  for (const Case& c : cases_of(kGeometries[3], DType::f32)) {
    CAPTURE(c.name);
    const std::vector<Tensor> in = on_gpu(c.inputs);
    const int64_t before = cuda::cudnn_conv_calls();
    const Tensor by_cudnn = run_with(ConvAlgorithm::cudnn, c.f, in);
    CHECK(cuda::cudnn_conv_calls() == before);
    CHECK(gpu_test::bytes_of(by_cudnn) == gpu_test::bytes_of(run_with(ConvAlgorithm::im2col, c.f, in)));
  }
  // The trainer accepts the key on this build.
  aurora::TrainConfig train;
  train.device = "cuda";
  train.conv_algorithm = "cudnn";
  CHECK(aurora::resolve_train_device(train, 1) == kGpu);
}
