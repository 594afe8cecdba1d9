// The matmul precision policy (tensor/precision.h, DESIGN.md section 9), on the CPU.
//
// Under MatmulPrecision::bf16 a GEMM op must compute exactly "inputs rounded to bf16, products
// accumulated in f32". The references are computed here independently: the bf16 rounding (round
// to nearest even on the f32 bits) and the product in double over host vectors; an f32-accumulated
// result may differ from the exact one by the f32 rounding of a k-term sum, so the bound is
// 4 k 2^-24 sum_q |a_q b_q| per element. Each check also asserts that the bf16 result differs
// from the plain f32 product by far more than that bound (the policy did something).
// Gradients are checked the same way (the backward GEMMs round their operands too, even when
// backward() runs outside the scope), and one double backward. f64 operands ignore the policy;
// tf32 is plain f32 on the CPU. conv2d / conv_transpose2d / conv2d_weight under bf16 are compared
// with the same ops run in f32 on explicitly rounded inputs (to_dtype twice): same kernels on
// the same values, so the results agree to f32 rounding.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <thread>

#include "autograd/engine.h"
#include "autograd/node.h"
#include "tensor/ops.h"
#include "tensor/precision.h"
#include "tests/bf16_reference.h"

using namespace engine;

namespace {

// bf16 rounding of an f32 value, round to nearest even (finite inputs).
double round_bf16(double v) { return test::round_to_bf16(float(v)); }
std::vector<double> rounded(const std::vector<double>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = round_bf16(v[i]);
  return out;
}

// c[n, m] = a[n, k] b[k, m] in double, and sum |a b| per element (for the f32 bound). Either
// operand may be read transposed: a_t means a is stored [k, n].
struct Product {
  std::vector<double> c, abs;
};
Product naive(const std::vector<double>& a, const std::vector<double>& b, int64_t n, int64_t k, int64_t m,
              bool a_t = false, bool b_t = false) {
  Product p{std::vector<double>(size_t(n * m)), std::vector<double>(size_t(n * m))};
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) {
      double s = 0, s_abs = 0;
      for (int64_t q = 0; q < k; ++q) {
        const double x = a_t ? a[size_t(q * n + i)] : a[size_t(i * k + q)];
        const double y = b_t ? b[size_t(j * k + q)] : b[size_t(q * m + j)];
        s += x * y;
        s_abs += std::fabs(x * y);
      }
      p.c[size_t(i * m + j)] = s;
      p.abs[size_t(i * m + j)] = s_abs;
    }
  return p;
}

// `got` is the f32-accumulated product of the reference (within the bound), and `plain_f32` is not.
void check_bf16_product(const char* what, const Tensor& got, const Product& ref, int64_t k,
                        const Tensor& plain_f32 = Tensor()) {
  CAPTURE(what);
  REQUIRE(got.dtype() == DType::f32);
  const std::vector<double> v = got.to_vector();
  REQUIRE(v.size() == ref.c.size());
  const double unit = 4.0 * double(k) * std::ldexp(1.0, -24);
  double worst = 0, f32_gap = 0;
  const std::vector<double> f = plain_f32.defined() ? plain_f32.to_vector() : std::vector<double>();
  for (size_t i = 0; i < v.size(); ++i) {
    const double bound = unit * ref.abs[i] + 1e-30;
    worst = std::max(worst, std::fabs(v[i] - ref.c[i]) / bound);
    if (!f.empty()) f32_gap = std::max(f32_gap, std::fabs(f[i] - ref.c[i]) / bound);
  }
  CHECK_MESSAGE(worst <= 1.0, what, ": error / bound = ", worst);
  if (!f.empty()) CHECK_MESSAGE(f32_gap > 20.0, what, ": the f32 product is as close as the bf16 one: ", f32_gap);
}

Tensor rnd(const Dims& shape, uint64_t seed, DType t = DType::f32) {
  Generator gen(seed);
  return randn(shape, gen, opts(t));
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  REQUIRE(x.size() == y.size());
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(x[i] - y[i]));
  return m;
}

// Agreement to f32 rounding: |a - b| <= rtol |b| + atol, elementwise.
void check_near(const char* what, const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-5) {
  CAPTURE(what);
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  REQUIRE(x.size() == y.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(x[i] - y[i]) / (atol + rtol * std::fabs(y[i])));
  CHECK_MESSAGE(worst <= 1.0, what, ": error / tolerance = ", worst);
}

Tensor bf16_rounded(const Tensor& t) { return to_dtype(to_dtype(t.detach(), DType::bf16), DType::f32); }

}  // namespace

TEST_CASE("precision: default, scopes nest and restore, per thread") {
  CHECK(matmul_precision() == MatmulPrecision::f32);
  {
    MatmulPrecisionScope a(MatmulPrecision::bf16);
    CHECK(matmul_precision() == MatmulPrecision::bf16);
    {
      MatmulPrecisionScope b(MatmulPrecision::tf32);
      CHECK(matmul_precision() == MatmulPrecision::tf32);
      MatmulPrecision other = MatmulPrecision::bf16;
      std::thread t([&] { other = matmul_precision(); });
      t.join();
      CHECK(other == MatmulPrecision::f32);  // a new thread starts at f32
    }
    CHECK(matmul_precision() == MatmulPrecision::bf16);
    {
      MatmulPrecisionScope c(MatmulPrecision::f32);
      CHECK(matmul_precision() == MatmulPrecision::f32);
    }
    CHECK(matmul_precision() == MatmulPrecision::bf16);
  }
  CHECK(matmul_precision() == MatmulPrecision::f32);
  CHECK(std::string(matmul_precision_name(MatmulPrecision::bf16)) == "bf16");
}

TEST_CASE("precision: gemm_arith picks the arithmetic and rejects bad dtypes") {
  CHECK(gemm_arith("t", DType::f32, DType::f32) == GemmArith::f32);
  CHECK(gemm_arith("t", DType::f64, DType::f64) == GemmArith::f64);
  CHECK(gemm_arith("t", DType::bf16, DType::f32) == GemmArith::bf16);
  {
    MatmulPrecisionScope s(MatmulPrecision::bf16);
    CHECK(gemm_arith("t", DType::f32, DType::f32) == GemmArith::bf16);
    CHECK(gemm_arith("t", DType::f64, DType::f64) == GemmArith::f64);
  }
  {
    MatmulPrecisionScope s(MatmulPrecision::tf32);
    CHECK(gemm_arith("t", DType::f32, DType::f32) == GemmArith::tf32);
  }
  CHECK_THROWS_WITH(gemm_arith("matmul", DType::f64, DType::f32), doctest::Contains("matmul: dtype mismatch"));
  CHECK_THROWS_WITH(gemm_arith("matmul", DType::i32, DType::f32), doctest::Contains("i32"));
}

TEST_CASE("precision: matmul, bmm and linear under bf16 = bf16 inputs with f32 accumulation") {
  const int64_t n = 7, k = 96, m = 5;
  const Tensor a = rnd({n, k}, 1), b = rnd({k, m}, 2);
  const std::vector<double> ar = rounded(a.to_vector()), br = rounded(b.to_vector());
  const Product ref = naive(ar, br, n, k, m);
  const Tensor plain = matmul(a, b);
  Tensor y;
  {
    MatmulPrecisionScope s(MatmulPrecision::bf16);
    y = matmul(a, b);
  }
  check_bf16_product("matmul", y, ref, k, plain);
  // The same as the f32 op on explicitly rounded inputs.
  check_near("matmul vs rounded inputs", y, matmul(bf16_rounded(a), bf16_rounded(b)), 1e-6, 1e-6);

  // bmm: two batches, the second with a transposed operand (a view).
  const Tensor a3 = rnd({2, n, k}, 3), bt = rnd({2, m, k}, 4);
  Tensor y3;
  {
    MatmulPrecisionScope s(MatmulPrecision::bf16);
    y3 = bmm(a3, transpose(bt, 1, 2));
  }
  const std::vector<double> a3r = rounded(a3.to_vector()), btr = rounded(bt.to_vector());
  for (int64_t i = 0; i < 2; ++i) {
    const std::vector<double> ai(a3r.begin() + i * n * k, a3r.begin() + (i + 1) * n * k);
    const std::vector<double> bi(btr.begin() + i * m * k, btr.begin() + (i + 1) * m * k);
    check_bf16_product("bmm", select(y3, 0, i), naive(ai, bi, n, k, m, false, true), k);
  }

  // linear: y = x W^T + bias, the bias added in f32 (not rounded).
  const Tensor x = rnd({3, 2, k}, 5), w = rnd({m, k}, 6), bias = rnd({m}, 7);
  Tensor yl;
  {
    MatmulPrecisionScope s(MatmulPrecision::bf16);
    yl = linear(x, w, bias);
  }
  Product lref = naive(rounded(x.to_vector()), rounded(w.to_vector()), 6, k, m, false, true);
  const std::vector<double> bv = bias.to_vector();
  for (size_t i = 0; i < lref.c.size(); ++i) {
    lref.c[i] += bv[i % size_t(m)];
    lref.abs[i] += std::fabs(bv[i % size_t(m)]);
  }
  check_bf16_product("linear", reshape(yl, {6, m}), lref, k + 1, reshape(linear(x, w, bias), {6, m}));
}

TEST_CASE("precision: bf16 gradients, saved bf16 copies, backward outside the scope, double backward") {
  const int64_t n = 6, k = 80, m = 9;
  const Tensor a = rnd({n, k}, 11).requires_grad_(true), b = rnd({k, m}, 12).requires_grad_(true);
  const Tensor g = rnd({n, m}, 13), v = rnd({n, k}, 14);
  Tensor y;
  {
    MatmulPrecisionScope s(MatmulPrecision::bf16);
    y = matmul(a, b);
  }
  // The Node saved the bf16 copies (half the memory of f32).
  REQUIRE(y.grad_fn());
  CHECK(y.grad_fn()->saved(0).dtype() == DType::bf16);
  CHECK(y.grad_fn()->saved(1).dtype() == DType::bf16);
  // Backward outside the scope: the Node's own policy (bf16) applies.
  CHECK(matmul_precision() == MatmulPrecision::f32);
  const TensorList gr = autograd::grad({y}, {a, b}, {g}, /*create_graph=*/true);
  REQUIRE(gr[0].dtype() == DType::f32);
  REQUIRE(gr[1].dtype() == DType::f32);
  const std::vector<double> ar = rounded(a.to_vector()), br = rounded(b.to_vector()), gv = rounded(g.to_vector());
  // da = g b^T, db = a^T g, from rounded operands.
  check_bf16_product("da", gr[0], naive(gv, br, n, m, k, false, true), m);
  check_bf16_product("db", gr[1], naive(ar, gv, k, n, m, true, false), n);
  // Double backward: d/db sum(da * v) = v^T g (both rounded: the recorded backward GEMM is bf16).
  const TensorList gg = autograd::grad({sum(mul(gr[0], v))}, {b});
  check_bf16_product("d(sum(da v))/db", gg[0], naive(rounded(v.to_vector()), gv, k, n, m, true, false), n);

  // linear's gradients likewise (the bias gradient is an f32 sum).
  const Tensor x = rnd({n, k}, 15).requires_grad_(true), w = rnd({m, k}, 16).requires_grad_(true);
  const Tensor bias = rnd({m}, 17).requires_grad_(true);
  Tensor yl;
  {
    MatmulPrecisionScope s(MatmulPrecision::bf16);
    yl = linear(x, w, bias);
  }
  const TensorList gl = autograd::grad({yl}, {x, w, bias}, {g});
  check_bf16_product("linear dx", gl[0], naive(gv, rounded(w.to_vector()), n, m, k), m);
  check_bf16_product("linear dw", gl[1], naive(gv, rounded(x.to_vector()), m, n, k, true, false), n);
  check_near("linear dbias", gl[2], sum(g, {0}), 1e-6, 1e-6);
}

TEST_CASE("precision: f64 ignores the policy; tf32 is f32 on the CPU") {
  const Tensor a = rnd({5, 33}, 21, DType::f64), b = rnd({33, 4}, 22, DType::f64);
  const Tensor ref = matmul(a, b);
  Tensor y;
  {
    MatmulPrecisionScope s(MatmulPrecision::bf16);
    y = matmul(a, b);
  }
  CHECK(y.dtype() == DType::f64);
  CHECK(max_abs_diff(y, ref) == 0.0);
  const Tensor af = rnd({5, 33}, 23), bf = rnd({33, 4}, 24);
  const Tensor reff = matmul(af, bf);
  Tensor yt;
  {
    MatmulPrecisionScope s(MatmulPrecision::tf32);
    yt = matmul(af, bf);
  }
  CHECK(max_abs_diff(yt, reff) == 0.0);
}

TEST_CASE("precision: conv2d family under bf16 = the f32 ops on bf16-rounded inputs") {
  Conv2dParams p;
  p.stride_h = p.stride_w = 2;
  p.pad_h = p.pad_w = 1;
  p.groups = 2;
  const Tensor x = rnd({2, 4, 9, 8}, 31).requires_grad_(true), w = rnd({6, 2, 3, 3}, 32).requires_grad_(true);
  const Tensor bias = rnd({6}, 33).requires_grad_(true);
  Tensor y;
  {
    MatmulPrecisionScope s(MatmulPrecision::bf16);
    y = conv2d(x, w, bias, p);
  }
  const Tensor xr = bf16_rounded(x), wr = bf16_rounded(w);
  check_near("conv2d", y, conv2d(xr, wr, bias.detach(), p));
  CHECK(max_abs_diff(y, conv2d(x.detach(), w.detach(), bias.detach(), p)) > 1e-3);  // not the f32 result
  const Tensor g = rnd(y.sizes(), 34);
  const TensorList gr = autograd::grad({y}, {x, w, bias}, {g});
  const Tensor gr16 = bf16_rounded(g);
  // Output padding (0, 1) maps the 5x4 output back to 9x8.
  check_near("conv2d dx", gr[0], conv_transpose2d(gr16, wr, Tensor(), p, 0, 1));
  check_near("conv2d dw", gr[1], conv2d_weight(xr, gr16, 3, 3, p));
  check_near("conv2d dbias", gr[2], sum(g, {0, 2, 3}));
  // conv_transpose2d itself, with an f32 bias.
  const Tensor bt = rnd({4}, 35);
  Tensor yt;
  {
    MatmulPrecisionScope s(MatmulPrecision::bf16);
    yt = conv_transpose2d(g, w.detach(), bt, p, 0, 1);
  }
  check_near("conv_transpose2d", yt, conv_transpose2d(gr16, wr, bt, p, 0, 1));
  CHECK(max_abs_diff(yt, conv_transpose2d(g, w.detach(), bt, p, 0, 1)) > 1e-3);
}
