// bf16 saved activations (Note [bf16 saved activations] in autograd/node.h, tensor/precision.h).
//
// Under SavedActivationScope(bf16) a Node keeps an f32 activation as a bf16 copy and widens it in
// backward. The expected gradients are computed here on the host from the definition of the
// formula: d/dx sum(exp(x)) = exp(x), which is what ExpBackward saved (its output). Without
// packing the gradient is our exp(x) itself (checked against std::exp to a few ulps); with
// packing it must be exactly bf16(that value) (round to nearest even, computed here on the f32
// bits), and differ from the f32 gradient.
// Also checked: what must stay exact stays exact (small tensors, SaveMode::exact ops such as
// softmax, parameters), a packed tensor refuses a double backward, a packed tensor is a snapshot,
// and the live bytes held for backward drop by about half.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "autograd/node.h"
#include "tensor/memory/memory.h"
#include "tensor/ops.h"
#include "tensor/precision.h"
#include "tests/bf16_reference.h"

using namespace engine;

namespace {

float round_bf16(float f) { return test::round_to_bf16(f); }

Tensor rnd(const Dims& shape, uint64_t seed) {
  Generator gen(seed);
  return mul(randn(shape, gen, TensorOptions{}), 0.5);
}

// Gradient of sum(exp(x)) wrt x, with the policy `saved` active during the forward.
std::vector<float> exp_grad(const Tensor& x0, DType saved) {
  const Tensor x = x0.detach().requires_grad_(true);
  Tensor loss;
  {
    SavedActivationScope scope(saved);
    loss = sum(exp(x));
  }
  const TensorList g = autograd::grad({loss}, {x});
  std::vector<float> out;
  for (double v : g[0].to_vector()) out.push_back(float(v));
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("saved activations: policy default, scope nests and restores, bad dtype") {
  CHECK(saved_activation_dtype() == DType::f32);
  {
    SavedActivationScope a(DType::bf16);
    CHECK(saved_activation_dtype() == DType::bf16);
    {
      SavedActivationScope b(DType::f32);
      CHECK(saved_activation_dtype() == DType::f32);
    }
    CHECK(saved_activation_dtype() == DType::bf16);
  }
  CHECK(saved_activation_dtype() == DType::f32);
  const std::string msg = error_of([] { SavedActivationScope s(DType::f64); });
  CHECK(msg.find("saved activations: expected f32 or bf16, got f64") != std::string::npos);
}

TEST_CASE("saved activations: a packed output gives the gradient of its bf16 rounding") {
  const int64_t n = 3 * autograd::kPackMinElements;
  const Tensor x = rnd({n}, 1);
  const std::vector<double> xv = x.to_vector();
  const std::vector<float> g32 = exp_grad(x, DType::f32), g16 = exp_grad(x, DType::bf16);
  int64_t bad32 = 0, bad16 = 0, differs = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(float(xv[size_t(i)]));
    // Our exp kernel against the C library: a few f32 ulps of slack.
    if (std::fabs(g32[size_t(i)] - e) > 1e-6f * e) ++bad32;
    if (g16[size_t(i)] != round_bf16(g32[size_t(i)])) ++bad16;
    if (g16[size_t(i)] != g32[size_t(i)]) ++differs;
  }
  CHECK(bad32 == 0);
  CHECK(bad16 == 0);
  // Most bf16 roundings change the value (the rest happen to be representable).
  CHECK(differs > n / 2);
}

TEST_CASE("saved activations: small tensors, exact ops, parameters and non-f32 stay exact") {
  // Below kPackMinElements: not packed, the gradient is the f32 one bit for bit.
  const Tensor small = rnd({autograd::kPackMinElements - 1}, 2);
  CHECK(exp_grad(small, DType::bf16) == exp_grad(small, DType::f32));

  // softmax saves its output with SaveMode::exact (spec: softmax in f32).
  const Tensor logits = rnd({64, 128}, 3), gy = rnd({64, 128}, 4);
  auto softmax_grad = [&](DType saved) {
    const Tensor l = logits.detach().requires_grad_(true);
    Tensor y;
    {
      SavedActivationScope s(saved);
      y = softmax(l, -1);
    }
    return autograd::grad({y}, {l}, {gy})[0].to_vector();
  };
  CHECK(softmax_grad(DType::bf16) == softmax_grad(DType::f32));

  // A persistent tensor (Kind::param) saved by mul is not copied.
  const Tensor w = empty({64, 128}, TensorOptions{DType::f32, Device::cpu(), memory::Kind::param});
  {
    autograd::NoGradGuard no_grad;
    copy_(w, rnd({64, 128}, 5));
  }
  const Tensor a = rnd({64, 128}, 6).requires_grad_(true);
  Tensor y;
  {
    SavedActivationScope s(DType::bf16);
    y = mul(a, w);
  }
  REQUIRE(y.grad_fn());
  CHECK(y.grad_fn()->saved(1).dtype() == DType::f32);
  CHECK(autograd::grad({y}, {a}, {gy})[0].to_vector() == mul(gy, w).to_vector());
}

TEST_CASE("saved activations: a packed tensor refuses a double backward and is a snapshot") {
  const int64_t n = 2 * autograd::kPackMinElements;
  const Tensor x = rnd({n}, 7).requires_grad_(true);
  Tensor loss;
  {
    SavedActivationScope s(DType::bf16);
    loss = sum(exp(x));
  }
  const std::string msg = error_of([&] { autograd::grad({loss}, {x}, {}, /*create_graph=*/true); });
  CHECK(msg.find("ExpBackward saved a bf16 copy") != std::string::npos);
  CHECK(msg.find("create_graph") != std::string::npos);

  // A snapshot: an in-place write to the original after the forward changes nothing in backward
  // (without packing the same write is an error, Note [saved tensor versions]).
  const Tensor a = rnd({n}, 8), b = rnd({n}, 9).requires_grad_(true);
  Tensor y;
  {
    SavedActivationScope s(DType::bf16);
    y = mul(a, b);  // saves a for b's gradient
  }
  const std::vector<double> av = a.to_vector();
  {
    autograd::NoGradGuard no_grad;
    add_(a, full_like(a, 1.0));
  }
  const std::vector<double> gb = autograd::grad({sum(y)}, {b})[0].to_vector();
  for (size_t i = 0; i < av.size(); ++i) REQUIRE(gb[i] == double(round_bf16(float(av[i]))));
}

TEST_CASE("saved activations: the bytes held for backward halve") {
  // A chain of 6 exps of a 64k-element tensor: each ExpBackward keeps its output. After the
  // forward only the saved tensors (and the last output) are live.
  const int64_t n = 1 << 16;
  auto held_bytes = [&](DType saved) {
    const Tensor x = mul(rnd({n}, 10), 0.01).requires_grad_(true);
    const int64_t before = memory::stats(Device::cpu()).live;
    Tensor y = x;
    {
      SavedActivationScope s(saved);
      for (int k = 0; k < 6; ++k) y = exp(mul(y, 0.1));
    }
    const int64_t held = memory::stats(Device::cpu()).live - before;
    // The backward still runs and gives finite values.
    const std::vector<double> g = autograd::grad({sum(y)}, {x})[0].to_vector();
    for (double v : g) REQUIRE(std::isfinite(v));
    return held;
  };
  const int64_t f32 = held_bytes(DType::f32), bf16 = held_bytes(DType::bf16);
  INFO("held bytes: f32 " << f32 << ", bf16 " << bf16);
  // f32: 6 saved outputs (the last is also y) = 6 n 4 bytes. bf16: 6 copies of n 2 bytes plus y.
  CHECK(f32 >= 6 * n * 4);
  CHECK(bf16 <= 6 * n * 2 + n * 4 + 64 * 1024);
}

TEST_CASE("saved activations: a packed copy and a bf16 GEMM operand of the same tensor share storage") {
  // exp saves its output y (packed to bf16); the bf16 matmul then converts the same y for its
  // operand. Note [shared bf16 copies]: one bf16 copy of y stays alive, not two.
  const int64_t rows = 256, k = 256, m = 8;
  const Tensor w = rnd({k, m}, 11).requires_grad_(true);  // so that the GEMM saves its operand
  const Tensor x = mul(rnd({rows, k}, 12), 0.1).requires_grad_(true);
  const int64_t before = memory::stats(Device::cpu()).live;
  Tensor z;
  {
    SavedActivationScope saved(DType::bf16);
    MatmulPrecisionScope gemm(MatmulPrecision::bf16);
    z = matmul(exp(x), w);  // the f32 exp(x) is freed when this line ends
  }
  const int64_t held = memory::stats(Device::cpu()).live - before;
  INFO("held " << held << " bytes; one bf16 copy of exp(x) is " << rows * k * 2);
  CHECK(held >= rows * k * 2);
  CHECK(held < rows * k * 2 + rows * k);  // a second copy would add rows * k * 2
  // The gradient uses bf16(exp(x)) in both places: dx = (g w^T) * bf16(exp(x)), g = 1.
  const std::vector<double> dx = autograd::grad({sum(z)}, {x})[0].to_vector();
  const std::vector<double> xv = x.to_vector(), wv = w.to_vector();
  std::vector<double> wsum(size_t(k), 0.0);
  for (int64_t q = 0; q < k; ++q)
    for (int64_t j = 0; j < m; ++j) wsum[size_t(q)] += double(round_bf16(float(wv[size_t(q * m + j)])));
  int64_t bad = 0;
  for (int64_t i = 0; i < rows * k; ++i) {
    const double e = round_bf16(std::exp(float(xv[size_t(i)])));
    const double ref = wsum[size_t(i % k)] * e;
    // f32 sums of m terms and our exp vs the C library's: relative 1e-5 (the bf16 step is 4e-3).
    if (std::fabs(dx[size_t(i)] - ref) > 1e-5 * (std::fabs(ref) + 1e-3)) ++bad;
  }
  CHECK(bad < rows * k / 1000);  // an exp one ulp apart may round to the neighbouring bf16 value
}
