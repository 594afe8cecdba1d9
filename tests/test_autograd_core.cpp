// Core autograd: graph building, pruning, double backward, saved-tensor versions, views.
// Expected values are derived by hand in the comments (closed-form derivatives).
#include <doctest/doctest.h>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::autograd;

namespace {
Tensor leaf(std::vector<double> v, Dims shape, DType t = DType::f64) {
  return from_vector(v, shape, opts(t)).requires_grad_(true);
}
}  // namespace

TEST_CASE("backward of a small expression matches closed form") {
  // y = sum(a * b + exp(a)); dy/da = b + exp(a), dy/db = a
  Tensor a = leaf({0.5, -1.0, 2.0}, {3});
  Tensor b = leaf({1.5, 2.0, -0.25}, {3});
  Tensor y = sum(add(mul(a, b), exp(a)));
  backward(y);
  auto ga = a.grad().to_vector(), gb = b.grad().to_vector();
  const double av[] = {0.5, -1.0, 2.0}, bv[] = {1.5, 2.0, -0.25};
  for (int i = 0; i < 3; ++i) {
    CHECK(ga[i] == doctest::Approx(bv[i] + std::exp(av[i])).epsilon(1e-12));
    CHECK(gb[i] == doctest::Approx(av[i]).epsilon(1e-12));
  }
}

TEST_CASE("gradients accumulate over two backward calls and across shared uses") {
  Tensor a = leaf({3.0}, {});
  Tensor y = mul(a, a);  // dy/da = 2a = 6
  backward(y);
  CHECK(a.grad().item() == doctest::Approx(6.0));
  backward(mul(a, a));
  CHECK(a.grad().item() == doctest::Approx(12.0));
  // add(a, a): both edges go to the same leaf and the gradient must not alias between them
  Tensor b = leaf({1.0, 2.0}, {2});
  Tensor c = leaf({1.0, 2.0}, {2});
  backward(sum(add(b, c)));
  backward(sum(add(b, c)));
  CHECK(b.grad().to_vector() == std::vector<double>{2.0, 2.0});
  CHECK(c.grad().to_vector() == std::vector<double>{2.0, 2.0});
}

TEST_CASE("grad() prunes to the requested inputs and leaves .grad untouched") {
  Tensor x = leaf({1.0, 2.0}, {2});
  Tensor w = leaf({3.0, -1.0}, {2});
  Tensor y = sum(mul(x, w));
  TensorList g = grad({y}, {x});
  CHECK(g[0].to_vector() == std::vector<double>{3.0, -1.0});
  CHECK_FALSE(w.grad().defined());
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("grad() of an unused input errors unless allow_unused") {
  Tensor x = leaf({1.0}, {1});
  Tensor z = leaf({1.0}, {1});
  Tensor y = sum(mul(x, x));
  CHECK_THROWS_WITH_AS(grad({y}, {z}, {}, false, false, true), doctest::Contains("not used"), Error);
  TensorList g = grad({y}, {z}, {}, false, true);
  CHECK_FALSE(g[0].defined());
}

TEST_CASE("double backward: d/dx of (d/dx x^3) = 6x") {
  Tensor x = leaf({2.0}, {});
  Tensor y = mul(mul(x, x), x);
  TensorList g = grad({y}, {x}, {}, /*create_graph=*/true);
  CHECK(g[0].item() == doctest::Approx(12.0));  // 3x^2
  CHECK(g[0].requires_grad());
  TensorList gg = grad({g[0]}, {x});
  CHECK(gg[0].item() == doctest::Approx(12.0));  // 6x
}

TEST_CASE("R1-shaped penalty: backward of sum(grad^2) reaches the weights") {
  // D(x) = sum(exp(w * x)); g = dD/dx = w exp(w x); r1 = sum(g^2) = sum(w^2 exp(2 w x))
  // dr1/dw = sum(2 w exp(2wx) + 2 x w^2 exp(2wx))
  Tensor w = leaf({0.3, -0.7}, {2});
  Tensor x = leaf({1.1, 0.4}, {2});
  Tensor d = sum(exp(mul(w, x)));
  TensorList g = grad({d}, {x}, {}, true);
  Tensor r1 = sum(mul(g[0], g[0]));
  backward(r1);
  const double wv[] = {0.3, -0.7}, xv[] = {1.1, 0.4};
  auto gw = w.grad().to_vector();
  for (int i = 0; i < 2; ++i) {
    const double e = std::exp(2 * wv[i] * xv[i]);
    CHECK(gw[i] == doctest::Approx(2 * wv[i] * e + 2 * xv[i] * wv[i] * wv[i] * e).epsilon(1e-12));
  }
}

TEST_CASE("a tensor modified in place after being saved raises, naming both ops") {
  Tensor a = leaf({1.0, 2.0}, {2});
  Tensor b = from_vector({3.0, 4.0}, {2}, opts(DType::f64));
  Tensor y = sum(mul(a, b));  // MulBackward saves b
  {
    NoGradGuard ng;
    fill_(b, 0.0);
  }
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("MulBackward"), Error);
  Tensor y2 = sum(mul(a, b));
  {
    NoGradGuard ng;
    mul_(b, 2.0);
  }
  CHECK_THROWS_WITH_AS(backward(y2), doctest::Contains("mul_"), Error);
}

TEST_CASE("backward twice without retain_graph reports freed saved tensors") {
  Tensor a = leaf({1.0, 2.0}, {2});
  Tensor y = sum(exp(a));
  backward(y);
  CHECK_THROWS_WITH_AS(backward(y), doctest::Contains("retain_graph"), Error);
  Tensor y2 = sum(exp(a));
  backward(y2, Tensor(), /*retain_graph=*/true);
  backward(y2);
  CHECK(a.grad().to_vector()[0] == doctest::Approx(3 * std::exp(1.0)));
}

TEST_CASE("views share storage and version; their gradients map back") {
  Tensor x = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor t = transpose(x, 0, 1);  // [3,2]
  CHECK(t.storage() == x.storage());
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.to_vector() == std::vector<double>{1, 4, 2, 5, 3, 6});
  Tensor s = narrow(t, 0, 1, 2);  // rows 1..2 of t: [[2,5],[3,6]]
  CHECK(s.to_vector() == std::vector<double>{2, 5, 3, 6});
  Tensor wts = from_vector({1, 10, 100, 1000}, {2, 2}, opts(DType::f64));
  backward(sum(mul(s, wts)));
  // x[0,1]=2 <- 1, x[1,1]=5 <- 10, x[0,2]=3 <- 100, x[1,2]=6 <- 1000
  CHECK(x.grad().to_vector() == std::vector<double>{0, 1, 100, 0, 10, 1000});
}

TEST_CASE("gradcheck and gradgradcheck of the core ops, with broadcasting and non-contiguous inputs") {
  Generator gen(7);
  Tensor a = randn({3, 4}, gen, opts(DType::f64)).requires_grad_(true);
  Tensor b = randn({4}, gen, opts(DType::f64)).requires_grad_(true);
  Tensor c = add(randn({4, 3}, gen, opts(DType::f64)), 3.0).detach().requires_grad_(true);
  auto f = [](const TensorList& xs) {
    Tensor ct = transpose(xs[2], 0, 1);  // non-contiguous [3,4]
    return div(sub(mul(xs[0], xs[1]), exp(neg(xs[0]))), add(log(ct), 0.5));
  };
  CHECK(gradcheck(f, {a, b, c}) == "");
  CHECK(gradgradcheck(f, {a, b, c}) == "");
  auto g = [](const TensorList& xs) { return mean(sum(expand(reshape(xs[0], {3, 1, 4}), {3, 2, 4}), {1}), {0}); };
  CHECK(gradcheck(g, {a}) == "");
  CHECK(gradgradcheck(g, {a}) == "");
  auto h = [](const TensorList& xs) { return mul(slice(xs[0], 1, 0, 4, 2), 2.0); };
  CHECK(gradcheck(h, {a}) == "");
  CHECK(gradgradcheck(h, {a}) == "");
}

TEST_CASE("gradcheck detects a wrong formula") {
  // f(x) = x * x but we compare against a function whose forward differs from what backward
  // computes: detach one factor, so analytical = x while numerical = 2x.
  Tensor x = leaf({0.7, -1.3}, {2});
  auto wrong = [](const TensorList& xs) { return mul(xs[0], xs[0].requires_grad() && autograd::grad_enabled() ? xs[0].detach() : xs[0]); };
  CHECK(gradcheck(wrong, {x}) != "");
}
