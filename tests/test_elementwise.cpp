// Elementwise ops: forward values against std:: math computed here, gradcheck and gradgradcheck
// (f64, with a broadcast operand and a non-contiguous input), the PyTorch conventions at kinks and
// ties, comparisons, error messages, and the CPU loop's fast paths (same results as the general
// strided path, bitwise independent of the thread count).
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::autograd;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

Tensor leaf(const std::vector<double>& v, const Dims& shape, DType t = DType::f64) {
  return from_vector(v, shape, opts(t)).requires_grad_(true);
}

// n values uniform in [lo, hi], at least 0.1 away from every point in `avoid` (kinks, ties).
std::vector<double> draw(int64_t n, double lo, double hi, uint64_t seed, const std::vector<double>& avoid = {}) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  std::vector<double> v;
  while (int64_t(v.size()) < n) {
    const double x = u(rng);
    bool ok = true;
    for (double a : avoid) ok = ok && std::abs(x - a) >= 0.1;
    if (ok) v.push_back(x);
  }
  return v;
}

// Compares every element (NaN matches NaN, inf matches inf of the same sign).
void check_values(const Tensor& t, const std::vector<double>& expected, double rel, const char* what) {
  INFO(std::string(what));
  const std::vector<double> got = t.to_vector();
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", expected " << expected[i]);
    if (std::isnan(expected[i])) {
      CHECK(std::isnan(got[i]));
    } else if (std::isinf(expected[i])) {
      CHECK(got[i] == expected[i]);
    } else if (rel == 0) {
      CHECK(got[i] == expected[i]);
    } else {
      CHECK(got[i] == doctest::Approx(expected[i]).epsilon(rel));
    }
  }
}

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;  // forward, from std:: math
  double lo, hi;                      // gradcheck domain
  std::vector<double> avoid;          // kinks to stay away from in gradcheck
  std::vector<double> extra;          // extra forward points (extremes, kinks)
};

double gelu_ref(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh_ref(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}
double softplus_ref(double x) { return x > 20 ? x : std::log1p(std::exp(x)); }

std::vector<UnaryCase> unary_cases() {
  const double g2 = std::sqrt(2.0);
  return {
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); }, 0.3, 2.5, {},
       {0.0, 1e-30, 4.0, 1e30, -1.0}},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double x) { return 1 / std::sqrt(x); }, 0.3, 2.5, {},
       {0.0, 4.0, 1e-20, -1.0}},
      {"square", [](const Tensor& x) { return square(x); }, [](double x) { return x * x; }, -2, 2, {}, {-3.0, 1e10}},
      {"abs", [](const Tensor& x) { return abs(x); }, [](double x) { return std::fabs(x); }, -2, 2, {0.0},
       {0.0, -0.0, -5.0}},
      {"sin", [](const Tensor& x) { return sin(x); }, [](double x) { return std::sin(x); }, -3, 3, {}, {10.0}},
      {"cos", [](const Tensor& x) { return cos(x); }, [](double x) { return std::cos(x); }, -3, 3, {}, {10.0}},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, [](double x) { return 1 / (1 + std::exp(-x)); }, -4,
       4, {}, {-100.0, -30.0, 0.0, 30.0, 100.0}},
      {"tanh", [](const Tensor& x) { return tanh(x); }, [](double x) { return std::tanh(x); }, -2, 2, {},
       {-30.0, 30.0}},
      {"erf", [](const Tensor& x) { return erf(x); }, [](double x) { return std::erf(x); }, -2, 2, {}, {-6.0, 6.0}},
      {"gelu", [](const Tensor& x) { return gelu(x); }, gelu_ref, -3, 3, {}, {-10.0, 0.0, 10.0}},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, GeluApprox::tanh); }, gelu_tanh_ref, -3, 3, {},
       {-10.0, 0.0, 10.0}},
      {"leaky_relu(0.2, sqrt2)", [g2](const Tensor& x) { return leaky_relu(x, 0.2, g2); },
       [g2](double x) { return g2 * (x >= 0 ? x : 0.2 * x); }, -2, 2, {0.0}, {0.0, -7.0}},
      {"leaky_relu default", [](const Tensor& x) { return leaky_relu(x); },
       [](double x) { return x >= 0 ? x : 0.01 * x; }, -2, 2, {0.0}, {0.0}},
      {"relu", [](const Tensor& x) { return relu(x); }, [](double x) { return std::max(x, 0.0); }, -2, 2, {0.0},
       {0.0}},
      {"softplus", [](const Tensor& x) { return softplus(x); }, softplus_ref, -3, 3, {},
       {-800.0, -50.0, 19.9, 20.0, 20.1, 25.0, 800.0}},
      {"softplus above threshold", [](const Tensor& x) { return softplus(x); }, softplus_ref, 21, 25, {}, {}},
      {"clamp(-0.5, 0.7)", [](const Tensor& x) { return clamp(x, -0.5, 0.7); },
       [](double x) { return std::min(std::max(x, -0.5), 0.7); }, -2, 2, {-0.5, 0.7}, {-0.5, 0.7}},
      {"clamp(min 0.3)", [](const Tensor& x) { return clamp(x, 0.3, std::nullopt); },
       [](double x) { return std::max(x, 0.3); }, -2, 2, {0.3}, {}},
      {"clamp(max -0.2)", [](const Tensor& x) { return clamp(x, std::nullopt, -0.2); },
       [](double x) { return std::min(x, -0.2); }, -2, 2, {-0.2}, {}},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double x) { return std::exp(x); }, -2, 2, {}, {}},
      {"log", [](const Tensor& x) { return log(x); }, [](double x) { return std::log(x); }, 0.3, 3, {}, {0.0}},
  };
}

std::vector<UnaryCase> pow_cases() {
  std::vector<UnaryCase> cs;
  for (double e : {0.0, 1.0, 2.0, 3.0, 0.5, -0.5, -1.0, -2.0, 2.5, -1.5, 1.3}) {
    cs.push_back({"pow", [e](const Tensor& x) { return pow(x, e); }, [e](double x) { return std::pow(x, e); }, 0.5,
                  2.0, {}, {}});
  }
  // Integer exponents are defined (and differentiable) for negative bases too.
  for (double e : {2.0, 3.0, -1.0, -2.0}) {
    cs.push_back({"pow (negative base)", [e](const Tensor& x) { return pow(x, e); },
                  [e](double x) { return std::pow(x, e); }, -2.0, -0.5, {}, {}});
  }
  return cs;
}

void check_unary(const UnaryCase& c, uint64_t seed) {
  INFO("op " << std::string(c.name));
  // Forward, f64 and f32, on random points of the domain plus the extra points.
  std::vector<double> xs = draw(20, c.lo, c.hi, seed, c.avoid);
  xs.insert(xs.end(), c.extra.begin(), c.extra.end());
  std::vector<double> expected;
  for (double x : xs) expected.push_back(c.ref(x));
  check_values(c.op(from_vector(xs, {int64_t(xs.size())}, opts(DType::f64))), expected, 1e-13, "f64 forward");
  // f32: the reference in double, evaluated at the float-rounded input.
  std::vector<double> expected32;
  for (double x : xs) expected32.push_back(double(float(c.ref(double(float(x))))));
  const Tensor y32 = c.op(from_vector(xs, {int64_t(xs.size())}, opts(DType::f32)));
  CHECK(y32.dtype() == DType::f32);
  check_values(y32, expected32, 2e-6, "f32 forward");

  // gradcheck + gradgradcheck: a non-contiguous input (transposed) ...
  Tensor base = leaf(draw(12, c.lo, c.hi, seed + 1, c.avoid), {4, 3});
  auto f_t = [&](const TensorList& in) { return c.op(transpose(in[0], 0, 1)); };
  CHECK(gradcheck(f_t, {base}) == "");
  CHECK(gradgradcheck(f_t, {base}) == "");
  // ... and a broadcast one: [3,1,4] expanded (stride 0) to [3,2,4], times a [2,4] operand.
  Tensor a = leaf(draw(12, c.lo, c.hi, seed + 2, c.avoid), {3, 1, 4});
  Tensor w = leaf(draw(8, -1.5, 1.5, seed + 3), {2, 4});
  auto f_b = [&](const TensorList& in) { return mul(c.op(expand(in[0], {3, 2, 4})), in[1]); };
  CHECK(gradcheck(f_b, {a, w}) == "");
  CHECK(gradgradcheck(f_b, {a, w}) == "");
}

// d/dx sum(op(x)) at the given points.
std::vector<double> grad_at(const std::function<Tensor(const Tensor&)>& op, const std::vector<double>& xs) {
  Tensor x = leaf(xs, {int64_t(xs.size())});
  return grad({sum(op(x))}, {x})[0].to_vector();
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  const Tensor c = contiguous(t);
  const auto* p = static_cast<const uint8_t*>(c.raw_data());
  return std::vector<uint8_t>(p, p + c.nbytes());
}

}  // namespace

TEST_CASE("unary ops: forward vs std::, gradcheck and gradgradcheck (f64, transposed and broadcast inputs)") {
  uint64_t seed = 100;
  for (const UnaryCase& c : unary_cases()) check_unary(c, seed += 10);
}

TEST_CASE("pow: every exponent path, forward and first and second derivatives") {
  uint64_t seed = 500;
  for (const UnaryCase& c : pow_cases()) check_unary(c, seed += 10);
}

TEST_CASE("f32 exp (vectorisable, tensor/kernels/elementwise.h) is within 2 ulp everywhere") {
  // Every 997th float from -110 to 95 (the whole finite-to-inf range, subnormal results included),
  // against the double result rounded to f32, in units in the last place (adjacent floats differ by
  // one in their bit patterns, also across the subnormal range).
  std::vector<double> xs;
  auto bits_of = [](float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; };
  auto from_bits = [](uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; };
  for (uint32_t u = bits_of(-110.0f); u > 0x80000000u; u -= std::min<uint32_t>(997, u - 0x80000000u))
    xs.push_back(from_bits(u));  // negative floats: the magnitude falls with the bit pattern
  for (uint32_t u = 0; u < bits_of(95.0f); u += 997) xs.push_back(from_bits(u));
  xs.insert(xs.end(), {0.0, -0.0, 88.72, 88.73, -87.3, -103.9, -149 * std::log(2.0), kInf, -kInf, kNaN});
  const std::vector<double> got = exp(from_vector(xs, {int64_t(xs.size())}, opts(DType::f32))).to_vector();
  const std::vector<double> sg = sigmoid(from_vector(xs, {int64_t(xs.size())}, opts(DType::f32))).to_vector();
  auto ulps = [](double a, double b) {
    const float fa = float(a), fb = float(b);
    int32_t ia, ib;
    std::memcpy(&ia, &fa, 4);
    std::memcpy(&ib, &fb, 4);
    return std::abs(int64_t(ia) - int64_t(ib));
  };
  int64_t worst = 0, worst_sig = 0;
  double worst_x = 0;
  size_t nan_ok = 0;
  bool tiny_ok = true;
  for (size_t i = 0; i < xs.size(); ++i) {
    const double x = double(float(xs[i]));
    if (std::isnan(x)) {
      nan_ok += std::isnan(got[i]) && std::isnan(sg[i]);
      continue;
    }
    const int64_t u = ulps(got[i], std::exp(x));
    if (u > worst) worst = u, worst_x = x;
    // Below x = -88.7, 1 + exp(-x) overflows f32 and sigmoid is 0 instead of a subnormal (as
    // PyTorch's f32 formula): compare in ulps only where the result is a normal float.
    const double s_exact = 1 / (1 + std::exp(-x));
    if (s_exact >= 1.2e-38) worst_sig = std::max(worst_sig, ulps(sg[i], s_exact));
    else tiny_ok = tiny_ok && sg[i] < 1.2e-38;
  }
  INFO("points " << xs.size() << ", worst exp error " << worst << " ulp at x = " << worst_x);
  CHECK(xs.size() > 1000000);  // about 2.2 million
  CHECK(worst <= 2);
  CHECK(worst_sig <= 3);
  CHECK(nan_ok == 1);
  CHECK(tiny_ok);
}

TEST_CASE("f32 erf, tanh and gelu (vectorisable, tensor/kernels/elementwise.h) against double") {
  // Every 331st float in [-6, 6] plus special values; erf within 2 ulp. gelu(x) = x/2 (1 + erf(x/sqrt2))
  // loses relative accuracy where 1 + erf cancels (x << 0), as PyTorch's f32 formula does: bound its
  // error by 4 ulp of the result plus 2^-23 |x| (two ulp of 1 + erf, times x/2; with libm's erff the
  // same measure is about half as large, since erff is within 0.5 ulp).
  auto bits_of = [](float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; };
  auto from_bits = [](uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; };
  std::vector<double> xs;
  for (uint32_t u = bits_of(-6.0f); u > 0x80000000u; u -= std::min<uint32_t>(331, u - 0x80000000u))
    xs.push_back(from_bits(u));
  for (uint32_t u = 0; u < bits_of(6.0f); u += 331) xs.push_back(from_bits(u));
  xs.insert(xs.end(), {0.0, -0.0, 1.0, -1.0, 4.0, 4.5, 1e-30, 30.0, -30.0, kInf, -kInf});
  const Tensor x32 = from_vector(xs, {int64_t(xs.size())}, opts(DType::f32));
  const std::vector<double> e = erf(x32).to_vector(), g = gelu(x32).to_vector();
  std::vector<double> xg;  // 3000 points spread over [-6, 6] for the gradient
  for (size_t i = 0; i < xs.size() - 11; i += (xs.size() - 11) / 3000) xg.push_back(double(float(xs[i])));
  const std::vector<double> dg = grad_at([](const Tensor& t) { return gelu(t.to(DType::f32)).to(DType::f64); }, xg);
  int64_t worst = 0;
  double worst_x = 0, worst_gelu = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const double x = xs[i];
    const float fe = float(e[i]), fr = float(std::erf(x));
    int32_t ia, ib;
    std::memcpy(&ia, &fe, 4);
    std::memcpy(&ib, &fr, 4);
    const int64_t u = std::abs(int64_t(ia) - int64_t(ib));
    if (u > worst) worst = u, worst_x = x;
    if (std::isfinite(x)) {
      const double exact = 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
      const double allowed = 4 * std::abs(exact) * 0x1p-24 + std::abs(x) * 0x1p-23 + 1e-45;
      worst_gelu = std::max(worst_gelu, std::abs(g[i] - exact) / allowed);
    }
  }
  INFO("points " << xs.size() << ", worst erf error " << worst << " ulp at x = " << worst_x
                 << ", worst gelu error / allowed " << worst_gelu);
  CHECK(xs.size() > 500000);
  CHECK(worst <= 2);
  CHECK(worst_gelu <= 1.0);
  CHECK(e[e.size() - 2] == 1.0);
  CHECK(e[e.size() - 1] == -1.0);
  CHECK(std::isnan(erf(from_vector({kNaN}, {1}, opts(DType::f32))).item()));
  // tanh (vectorisable too) over the same points, within 2 ulp.
  const std::vector<double> th = tanh(x32).to_vector();
  int64_t worst_tanh = 0;
  double worst_tanh_x = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const float ft = float(th[i]), fr = float(std::tanh(xs[i]));
    int32_t ia, ib;
    std::memcpy(&ia, &ft, 4);
    std::memcpy(&ib, &fr, 4);
    const int64_t u = std::abs(int64_t(ia) - int64_t(ib));
    if (u > worst_tanh) worst_tanh = u, worst_tanh_x = xs[i];
  }
  INFO("worst tanh error " << worst_tanh << " ulp at x = " << worst_tanh_x);
  CHECK(worst_tanh <= 2);
  // The last extras are 30, -30, inf, -inf.
  CHECK(th[th.size() - 4] == 1.0);
  CHECK(th[th.size() - 3] == -1.0);
  CHECK(th[th.size() - 2] == 1.0);
  CHECK(th[th.size() - 1] == -1.0);
  CHECK(std::isnan(tanh(from_vector({kNaN}, {1}, opts(DType::f32))).item()));
  // The f32 gelu gradient (erf and exp inside) against the closed form.
  double worst_grad = 0;
  for (size_t i = 0; i < xg.size(); ++i) {
    const double x = xg[i];
    const double d = 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-x * x / 2) / std::sqrt(2 * M_PI);
    worst_grad = std::max(worst_grad, std::abs(dg[i] - d) / (0x1p-24 * (4 * std::abs(d) + std::abs(x) + 1)));
  }
  INFO("gelu gradient: worst error " << worst_grad << " x 2^-24 (4 |d| + |x| + 1) over " << xg.size() << " points");
  CHECK(xg.size() >= 3000);
  CHECK(worst_grad <= 1.0);
}

TEST_CASE("pow at x <= 0 follows C's pow rules; its gradient as PyTorch's e x^(e-1)") {
  const Tensor x = from_vector({-2.0, 0.0, -1.5, 0.0, 2.0}, {5}, opts(DType::f64));
  check_values(pow(x, 0.5), {kNaN, 0.0, kNaN, 0.0, std::sqrt(2.0)}, 1e-15, "^0.5");
  check_values(pow(x, -0.5), {kNaN, kInf, kNaN, kInf, 1 / std::sqrt(2.0)}, 1e-15, "^-0.5");
  check_values(pow(x, 2.5), {kNaN, 0.0, kNaN, 0.0, std::pow(2.0, 2.5)}, 1e-15, "^2.5");
  check_values(pow(x, -1.0), {-0.5, kInf, -1 / 1.5, kInf, 0.5}, 1e-15, "^-1");
  check_values(pow(x, 0.0), {1, 1, 1, 1, 1}, 0, "^0");
  check_values(pow(from_vector({kNaN}, {1}, opts(DType::f64)), 0.0), {1.0}, 0, "NaN^0");
  check_values(pow(x, 3.0), {-8.0, 0.0, -3.375, 0.0, 8.0}, 1e-15, "^3");
  check_values(pow(x, -2.0), {0.25, kInf, 1 / 2.25, kInf, 0.25}, 1e-15, "^-2");
  // Gradients: 2.5 x^1.5 is 0 at 0; 0.5 x^-0.5 is inf at 0 (as PyTorch); e = 0 gives 0.
  check_values(from_vector(grad_at([](const Tensor& t) { return pow(t, 2.5); }, {0.0, 4.0}), {2}, opts(DType::f64)),
               {0.0, 2.5 * 8.0}, 1e-14, "d x^2.5");
  check_values(from_vector(grad_at([](const Tensor& t) { return pow(t, 0.5); }, {0.0, 4.0}), {2}, opts(DType::f64)),
               {kInf, 0.25}, 1e-14, "d x^0.5");
  check_values(from_vector(grad_at([](const Tensor& t) { return pow(t, 0.0); }, {0.0, -3.0}), {2}, opts(DType::f64)),
               {0.0, 0.0}, 0, "d x^0");
  // pow(x, 2) is bitwise x * x.
  Generator gen(3);
  const Tensor r = randn({257}, gen);
  CHECK(bytes_of(pow(r, 2.0)) == bytes_of(mul(r, r)));
}

TEST_CASE("first derivatives against closed forms, including PyTorch's conventions at kinks") {
  const std::vector<double> xs = {-1.5, -0.3, 0.0, 0.4, 2.0};
  auto closed = [&](const std::function<Tensor(const Tensor&)>& op, const std::function<double(double)>& d,
                    const char* what) {
    INFO(std::string(what));
    const std::vector<double> g = grad_at(op, xs);
    for (size_t i = 0; i < xs.size(); ++i) CHECK(g[i] == doctest::Approx(d(xs[i])).epsilon(1e-13));
  };
  const double g2 = std::sqrt(2.0);
  // relu'(0) = 0, leaky'(0) = slope * gain (PyTorch tests x > 0), abs'(0) = 0.
  closed([](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? 1.0 : 0.0; }, "relu");
  closed([g2](const Tensor& x) { return leaky_relu(x, 0.2, g2); },
         [g2](double x) { return x > 0 ? g2 : 0.2 * g2; }, "leaky_relu");
  closed([](const Tensor& x) { return abs(x); }, [](double x) { return double((x > 0) - (x < 0)); }, "abs");
  // clamp passes the gradient at the bounds themselves (inclusive).
  closed([](const Tensor& x) { return clamp(x, -0.3, 0.4); },
         [](double x) { return x >= -0.3 && x <= 0.4 ? 1.0 : 0.0; }, "clamp");
  closed([](const Tensor& x) { return sigmoid(x); },
         [](double x) { const double s = 1 / (1 + std::exp(-x)); return s * (1 - s); }, "sigmoid");
  closed([](const Tensor& x) { return tanh(x); }, [](double x) { return 1 - std::tanh(x) * std::tanh(x); }, "tanh");
  closed([](const Tensor& x) { return erf(x); }, [](double x) { return 2 / std::sqrt(M_PI) * std::exp(-x * x); },
         "erf");
  closed([](const Tensor& x) { return gelu(x); },
         [](double x) { return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-x * x / 2) / std::sqrt(2 * M_PI); },
         "gelu");
  closed([](const Tensor& x) { return softplus(x); }, [](double x) { return 1 / (1 + std::exp(-x)); }, "softplus");
  closed([](const Tensor& x) { return sin(x); }, [](double x) { return std::cos(x); }, "sin");
  closed([](const Tensor& x) { return cos(x); }, [](double x) { return -std::sin(x); }, "cos");
  closed([](const Tensor& x) { return square(x); }, [](double x) { return 2 * x; }, "square");
  // gelu_tanh: d/dx of 0.5 x (1 + tanh u), by a symmetric difference of the closed form in long double.
  closed([](const Tensor& x) { return gelu(x, GeluApprox::tanh); },
         [](double x) {
           const double k = std::sqrt(2 / M_PI), c = 0.044715;
           const double t = std::tanh(k * (x + c * x * x * x));
           return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * c * x * x);
         },
         "gelu_tanh");
  // Second derivatives at a point, against closed forms: sigmoid'' = s(1-s)(1-2s), gelu'' = phi(x)(2 - x^2).
  Tensor x = leaf({0.7}, {1});
  Tensor g1 = grad({sum(sigmoid(x))}, {x}, {}, true)[0];
  const double s = 1 / (1 + std::exp(-0.7));
  CHECK(grad({sum(g1)}, {x})[0].item() == doctest::Approx(s * (1 - s) * (1 - 2 * s)).epsilon(1e-13));
  Tensor g2g = grad({sum(gelu(x))}, {x}, {}, true)[0];
  CHECK(grad({sum(g2g)}, {x})[0].item() ==
        doctest::Approx(std::exp(-0.49 / 2) / std::sqrt(2 * M_PI) * (2 - 0.49)).epsilon(1e-13));
}

TEST_CASE("sign: values, NaN and zeros give 0, no gradient recorded") {
  const Tensor x = leaf({-2.5, 0.0, -0.0, 3.0, kNaN}, {5});
  const Tensor s = sign(x);
  check_values(s, {-1, 0, 0, 1, 0}, 0, "sign");
  CHECK_FALSE(s.requires_grad());
  check_values(sign(from_vector({-1e-30, 7}, {2}, opts(DType::f32))), {-1, 1}, 0, "sign f32");
}

TEST_CASE("binary ops: maximum and minimum with broadcasting, NaN, and the half/half split on ties") {
  // Forward with broadcasting [3,1] x [1,2].
  const Tensor a = from_vector({1, -2, kNaN}, {3, 1}, opts(DType::f64));
  const Tensor b = from_vector({0, 5}, {1, 2}, opts(DType::f64));
  check_values(maximum(a, b), {1, 5, 0, 5, kNaN, kNaN}, 0, "maximum");
  check_values(minimum(a, b), {0, 1, -2, -2, kNaN, kNaN}, 0, "minimum");
  check_values(maximum(from_vector({1, -2}, {2}, opts(DType::f32)), from_vector({kNaN, -3}, {2}, opts(DType::f32))),
               {kNaN, -2}, 0, "maximum f32, NaN on the right");
  // Ties: each side gets half of the gradient.
  Tensor p = leaf({1.0, 2.0, 3.0}, {3});
  Tensor q = leaf({1.0, 5.0, 0.0}, {3});
  TensorList g = grad({sum(mul(maximum(p, q), from_vector({10, 20, 30}, {3}, opts(DType::f64))))}, {p, q});
  CHECK(g[0].to_vector() == std::vector<double>{5, 0, 30});
  CHECK(g[1].to_vector() == std::vector<double>{5, 20, 0});
  g = grad({sum(minimum(p, q))}, {p, q});
  CHECK(g[0].to_vector() == std::vector<double>{0.5, 1, 0});
  CHECK(g[1].to_vector() == std::vector<double>{0.5, 0, 1});
  // gradcheck + gradgradcheck with broadcasting [3,1,4] x [2,4], and a transposed operand; values
  // kept apart so that no pair is within the difference step of a tie.
  const std::vector<double> bv = draw(8, -2, 2, 91);
  Tensor x = leaf(draw(12, -2, 2, 92, bv), {3, 1, 4});
  Tensor y = leaf(bv, {2, 4});
  Tensor yt = leaf(bv, {4, 2});
  for (bool is_min : {false, true}) {
    INFO("is_min " << is_min);
    auto op = [is_min](const Tensor& u, const Tensor& v) { return is_min ? minimum(u, v) : maximum(u, v); };
    auto f = [&](const TensorList& in) { return op(in[0], in[1]); };
    CHECK(gradcheck(f, {x, y}) == "");
    CHECK(gradgradcheck(f, {x, y}) == "");
    auto ft = [&](const TensorList& in) { return mul(op(transpose(in[1], 0, 1), in[0]), in[0]); };
    CHECK(gradcheck(ft, {x, yt}) == "");
    CHECK(gradgradcheck(ft, {x, yt}) == "");
  }
}

TEST_CASE("arithmetic: broadcast [3,1,4] with [2,4], forward and gradgradcheck") {
  const std::vector<double> av = draw(12, -2, 2, 7), bv = draw(8, 0.5, 2, 8);
  Tensor a = leaf(av, {3, 1, 4});
  Tensor b = leaf(bv, {2, 4});
  const Tensor s = add(a, b), p = mul(a, b), q = div(a, b), d = sub(a, b);
  CHECK(s.sizes() == Dims{3, 2, 4});
  const std::vector<double> sv = s.to_vector(), pv = p.to_vector(), qv = q.to_vector(), dv = d.to_vector();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 4; ++k) {
        const size_t o = size_t(i * 8 + j * 4 + k);
        const double x = av[size_t(i * 4 + k)], y = bv[size_t(j * 4 + k)];
        CHECK(sv[o] == x + y);
        CHECK(pv[o] == x * y);
        CHECK(qv[o] == x / y);
        CHECK(dv[o] == x - y);
      }
  auto f = [](const TensorList& in) { return div(sub(mul(in[0], in[1]), square(in[0])), add(in[1], 3.0)); };
  CHECK(gradcheck(f, {a, b}) == "");
  CHECK(gradgradcheck(f, {a, b}) == "");
}

TEST_CASE("where: broadcasting all three operands; gradient where(c, g, 0) and where(c, 0, g)") {
  const Tensor c = from_vector({1, 0, 0, 1, 1, 0}, {3, 2, 1}, opts(DType::boolean));
  const std::vector<double> av = draw(12, -2, 2, 11), bv = draw(4, -2, 2, 12);
  Tensor a = leaf(av, {3, 1, 4});
  Tensor b = leaf(bv, {4});
  const Tensor out = where(c, a, b);
  REQUIRE(out.sizes() == Dims{3, 2, 4});
  const std::vector<double> ov = out.to_vector();
  const int cv[] = {1, 0, 0, 1, 1, 0};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 4; ++k)
        CHECK(ov[size_t(i * 8 + j * 4 + k)] == (cv[i * 2 + j] ? av[size_t(i * 4 + k)] : bv[size_t(k)]));
  // d/da sum(where) counts the rows where c is true; d/db the rest.
  TensorList g = grad({sum(out)}, {a, b});
  CHECK(g[0].to_vector() == std::vector<double>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1});
  CHECK(g[1].to_vector() == std::vector<double>{3, 3, 3, 3});
  auto f = [&](const TensorList& in) { return mul(where(c, square(in[0]), in[1]), in[1]); };
  CHECK(gradcheck(f, {a, b}) == "");
  CHECK(gradgradcheck(f, {a, b}) == "");
  // u8 condition, a non-contiguous value operand, f32 values, integer values.
  const Tensor cu8 = from_vector({0, 1, 1}, {3}, opts(DType::u8));
  Tensor m = leaf({1, 2, 3, 4, 5, 6}, {3, 2});
  auto ft = [&](const TensorList& in) { return where(cu8, transpose(in[0], 0, 1), 0.5 * in[0].narrow(0, 0, 1).reshape({1, 2}).transpose(0, 1)); };
  check_values(ft({m}), {0.5, 3, 5, 1, 4, 6}, 0, "u8 where, transposed");
  CHECK(gradcheck(ft, {m}) == "");
  CHECK(gradgradcheck(ft, {m}) == "");
  check_values(where(cu8, from_vector({1, 2, 3}, {3}, opts(DType::f32)), scalar_tensor(-1, opts(DType::f32))),
               {-1, 2, 3}, 0, "f32 where with a 0-dim operand");
  const Tensor wi = where(cu8, from_vector_i64({7, 8, 9}, {3}), from_vector_i64({-1}, {1}));
  CHECK(wi.dtype() == DType::i64);
  check_values(wi, {-1, 8, 9}, 0, "i64 where");
}

TEST_CASE("comparisons and logical_not: bool results, broadcasting, scalars, no grad") {
  const Tensor a = leaf({1, 2, 3}, {3, 1});
  const Tensor b = from_vector({2, 3}, {1, 2}, opts(DType::f64));
  struct Cmp {
    const char* name;
    std::function<Tensor(const Tensor&, const Tensor&)> op;
    std::function<bool(double, double)> ref;
  };
  const std::vector<Cmp> cmps = {
      {"eq", [](const Tensor& x, const Tensor& y) { return eq(x, y); }, [](double x, double y) { return x == y; }},
      {"ne", [](const Tensor& x, const Tensor& y) { return ne(x, y); }, [](double x, double y) { return x != y; }},
      {"lt", [](const Tensor& x, const Tensor& y) { return lt(x, y); }, [](double x, double y) { return x < y; }},
      {"le", [](const Tensor& x, const Tensor& y) { return le(x, y); }, [](double x, double y) { return x <= y; }},
      {"gt", [](const Tensor& x, const Tensor& y) { return gt(x, y); }, [](double x, double y) { return x > y; }},
      {"ge", [](const Tensor& x, const Tensor& y) { return ge(x, y); }, [](double x, double y) { return x >= y; }},
  };
  for (const Cmp& c : cmps) {
    INFO(std::string(c.name));
    const Tensor r = c.op(a, b);
    CHECK(r.dtype() == DType::boolean);
    CHECK(r.sizes() == Dims{3, 2});
    CHECK_FALSE(r.requires_grad());
    std::vector<double> expected;
    for (double x : {1.0, 2.0, 3.0})
      for (double y : {2.0, 3.0}) expected.push_back(c.ref(x, y) ? 1 : 0);
    CHECK(r.to_vector() == expected);
    // Same on i64 and f32 tensors.
    CHECK(c.op(from_vector_i64({1, 2, 3}, {3, 1}), from_vector_i64({2, 3}, {1, 2})).to_vector() == expected);
    CHECK(c.op(from_vector({1, 2, 3}, {3, 1}, opts(DType::f32)), from_vector({2, 3}, {1, 2}, opts(DType::f32)))
              .to_vector() == expected);
  }
  // NaN compares unequal to everything.
  const Tensor n = from_vector({kNaN, 1}, {2}, opts(DType::f64));
  CHECK(eq(n, n).to_vector() == std::vector<double>{0, 1});
  CHECK(ne(n, n).to_vector() == std::vector<double>{1, 0});
  // Tensor-scalar.
  const Tensor v = from_vector({-1, 0.5, 2}, {3}, opts(DType::f64));
  CHECK(gt(v, 0.5).to_vector() == std::vector<double>{0, 0, 1});
  CHECK(ge(v, 0.5).to_vector() == std::vector<double>{0, 1, 1});
  CHECK(lt(v, 0.5).to_vector() == std::vector<double>{1, 0, 0});
  CHECK(le(v, 0.5).to_vector() == std::vector<double>{1, 1, 0});
  // The scalar is rounded to the tensor's type (f32(0.1) is not > 0.1), as PyTorch.
  CHECK(gt(from_vector({0.1}, {1}, opts(DType::f32)), 0.1).item() == 0);
  CHECK(ge(from_vector({0.1}, {1}, opts(DType::f32)), 0.1).item() == 1);
  // ... but integers compare against the exact scalar (1 > 0.5).
  CHECK(gt(from_vector_i64({0, 1}, {2}), 0.5).to_vector() == std::vector<double>{0, 1});
  // logical_not of floats, ints and bools; the result composes with where.
  CHECK(logical_not(from_vector({0, -0.0, 2, kNaN}, {4}, opts(DType::f64))).to_vector() ==
        std::vector<double>{1, 1, 0, 0});
  const Tensor mask = gt(v, 0.0);
  CHECK(logical_not(mask).to_vector() == std::vector<double>{1, 0, 0});
  CHECK(logical_not(mask).dtype() == DType::boolean);
  CHECK(where(logical_not(mask), v, zeros_like(v)).to_vector() == std::vector<double>{-1, 0, 0});
  CHECK(logical_not(from_vector_i64({0, 3}, {2})).to_vector() == std::vector<double>{1, 0});
  // A non-contiguous operand.
  const Tensor m = from_vector({1, 2, 3, 4, 5, 6}, {2, 3}, opts(DType::f64));
  CHECK(gt(transpose(m, 0, 1), 2.5).to_vector() == std::vector<double>{0, 1, 0, 1, 1, 1});
}

TEST_CASE("error messages name the op and the bad value") {
  const Tensor f32 = ones({3}), f64 = ones({3}, opts(DType::f64));
  CHECK_THROWS_WITH_AS(add(f32, f64), "add: dtype mismatch, f32 vs f64", Error);
  CHECK_THROWS_WITH_AS(maximum(f64, f32), "maximum: dtype mismatch, f64 vs f32", Error);
  CHECK_THROWS_WITH_AS(gt(f32, f64), "gt: dtype mismatch, f32 vs f64", Error);
  CHECK_THROWS_WITH_AS(where(gt(f32, 0.0), f32, f64), "where: dtype mismatch, f32 vs f64", Error);
  CHECK_THROWS_WITH_AS(mul(ones({3}), ones({4})), "mul: shapes [3] and [4] cannot be broadcast together", Error);
  CHECK_THROWS_WITH_AS(minimum(ones({2, 3}), ones({3, 2})),
                       "minimum: shapes [2,3] and [3,2] cannot be broadcast together", Error);
  CHECK_THROWS_WITH_AS(eq(ones({2}), ones({5})), "eq: shapes [2] and [5] cannot be broadcast together", Error);
  CHECK_THROWS_WITH_AS(where(gt(ones({2}), 0.0), ones({3}), ones({3})),
                       "where: shapes [2] and [3] cannot be broadcast together", Error);
  CHECK_THROWS_WITH_AS(where(ones({3}), f32, f32), "where: condition must be a bool or u8 tensor, got f32", Error);
  CHECK_THROWS_WITH_AS(sqrt(from_vector_i64({1}, {1})), doctest::Contains("sqrt: expected an f32 or f64 tensor, got i64"),
                       Error);
  CHECK_THROWS_WITH_AS(sigmoid(ones({2}, opts(DType::bf16))), doctest::Contains("sigmoid: expected an f32 or f64"),
                       Error);
  CHECK_THROWS_WITH_AS(clamp(f32, std::nullopt, std::nullopt), "clamp: at least one of min and max must be given",
                       Error);
  CHECK_THROWS_WITH_AS(clamp(f32, kNaN, 1.0), doctest::Contains("clamp: bounds must not be NaN"), Error);
  CHECK_THROWS_WITH_AS(gt(ones({2}, opts(DType::bf16)), 0.0), doctest::Contains("gt_scalar: unsupported dtype bf16"),
                       Error);
}

TEST_CASE("double backward of an R1-style penalty through leaky_relu * sqrt(2) (StyleGAN's lrelu)") {
  // D(x) = sum(w2 * lrelu(w1 * x + b)); r1 = sum((dD/dx)^2) reaches w1, w2 through the recorded formulas.
  Tensor x = leaf(draw(6, -2, 2, 41, {0.0}), {2, 3});
  Tensor w1 = leaf(draw(3, 0.5, 1.5, 42), {3});
  Tensor b = leaf(draw(3, -0.02, 0.02, 43), {3});  // |x w1 + b| >= 0.03: away from the kink
  Tensor w2 = leaf(draw(3, -1, 1, 44), {3});
  auto r1 = [](const TensorList& in) {
    // gradcheck evaluates f under NoGradGuard for the differences: the inner grad needs grad mode,
    // and the outer graph only when the caller records one (as gradgradcheck does).
    const bool outer = grad_enabled();
    GradModeGuard on(true);
    Tensor d = sum(mul(leaky_relu(add(mul(in[0], in[1]), in[2]), 0.2, std::sqrt(2.0)), in[3]));
    Tensor g = grad({d}, {in[0]}, {}, /*create_graph=*/outer)[0];
    GradModeGuard mode(outer);
    return sum(square(g));
  };
  // Closed form: dD/dx = w2 w1 sqrt2 (x w1 + b > 0 ? 1 : 0.2), so d r1 / d w2 = 2 w2 w1^2 2 s^2 summed over rows.
  Tensor r = r1({x, w1, b, w2});
  const std::vector<double> xv = x.to_vector(), w1v = w1.to_vector(), bv = b.to_vector(), w2v = w2.to_vector();
  TensorList g = grad({r}, {w2});
  for (int j = 0; j < 3; ++j) {
    double expected = 0;
    for (int i = 0; i < 2; ++i) {
      const double s = xv[size_t(i * 3 + j)] * w1v[size_t(j)] + bv[size_t(j)] > 0 ? 1.0 : 0.2;
      expected += 2 * w2v[size_t(j)] * w1v[size_t(j)] * w1v[size_t(j)] * 2 * s * s;
    }
    CHECK(g[0].to_vector()[size_t(j)] == doctest::Approx(expected).epsilon(1e-12));
  }
  CHECK(gradcheck(r1, {x, w1, b, w2}) == "");
}

TEST_CASE("CPU loop: fast paths agree with the strided path and with closed forms") {
  Generator gen(5);
  // Large enough for several parallel blocks (kParallelGrain = 16384).
  const Tensor a = randn({37, 1500}, gen);
  const Tensor b = randn({37, 1500}, gen);
  const Tensor at = contiguous(transpose(a, 0, 1));  // [1500, 37]
  const Tensor a_strided = transpose(at, 0, 1);     // a's values, non-contiguous
  const Tensor row = randn({1500}, gen);
  const Tensor col = randn({37, 1}, gen);
  const Tensor scalar = scalar_tensor(0.75);
  using Op2 = std::function<Tensor(const Tensor&, const Tensor&)>;
  const std::vector<std::pair<const char*, Op2>> ops = {
      {"add", [](const Tensor& x, const Tensor& y) { return add(x, y); }},
      {"mul", [](const Tensor& x, const Tensor& y) { return mul(x, y); }},
      {"maximum", [](const Tensor& x, const Tensor& y) { return maximum(x, y); }},
      {"gelu(x)*y", [](const Tensor& x, const Tensor& y) { return mul(gelu(x), y); }},
      {"where(x>0, lrelu(x), y)",
       [](const Tensor& x, const Tensor& y) { return where(gt(x, 0.0), leaky_relu(x, 0.2, std::sqrt(2.0)), y); }},
  };
  for (const auto& [name, op] : ops) {
    INFO(std::string(name));
    // same-shape contiguous (flat loop) vs strided first operand: bitwise equal.
    CHECK(bytes_of(op(a, b)) == bytes_of(op(a_strided, b)));
    // scalar-like broadcast (0-dim, and [1,1]) and row / column broadcasts against materialised copies.
    CHECK(bytes_of(op(a, scalar)) == bytes_of(op(a, contiguous(expand(scalar, {37, 1500})))));
    CHECK(bytes_of(op(scalar.reshape({1, 1}), a)) == bytes_of(op(contiguous(expand(scalar, {37, 1500})), a)));
    CHECK(bytes_of(op(a, row)) == bytes_of(op(a, contiguous(expand(row, {37, 1500})))));
    CHECK(bytes_of(op(col, a_strided)) == bytes_of(op(contiguous(expand(col, {37, 1500})), a)));
  }
  // Closed form on the flat and scalar paths.
  const std::vector<double> av = a.to_vector(), bv = b.to_vector(), sum_v = add(a, b).to_vector(),
                            sc = mul(a, scalar).to_vector();
  bool flat_ok = true, scalar_ok = true;
  for (size_t i = 0; i < av.size(); ++i) {
    flat_ok = flat_ok && sum_v[i] == double(float(av[i]) + float(bv[i]));
    scalar_ok = scalar_ok && sc[i] == double(float(av[i]) * 0.75f);
  }
  CHECK(flat_ok);
  CHECK(scalar_ok);
  // A [N,C,H,W] + [1,C,1,1] bias (inner stride 0 per row) against a scalar loop.
  const Tensor x4 = randn({2, 3, 5, 7}, gen), bias = randn({1, 3, 1, 1}, gen);
  const std::vector<double> y4 = add(x4, bias).to_vector(), x4v = x4.to_vector(), biasv = bias.to_vector();
  bool bias_ok = true;
  for (size_t i = 0; i < x4v.size(); ++i)
    bias_ok = bias_ok && y4[i] == double(float(x4v[i]) + float(biasv[(i / 35) % 3]));
  CHECK(bias_ok);
  // Empty tensors and 0-dim tensors.
  CHECK(add(ones({0, 3}), ones({3})).sizes() == Dims{0, 3});
  CHECK(sigmoid(scalar_tensor(0.0)).item() == 0.5);
}

TEST_CASE("CPU loop: results are bitwise independent of the thread count") {
  Generator gen(9);
  const Tensor a = randn({64, 1100}, gen), b = randn({1100}, gen);
  const Tensor at = transpose(contiguous(transpose(a, 0, 1)), 0, 1);
  auto run = [&] {
    std::vector<std::vector<uint8_t>> r;
    r.push_back(bytes_of(mul(a, b)));
    r.push_back(bytes_of(gelu(at, GeluApprox::tanh)));
    r.push_back(bytes_of(softplus(a)));
    r.push_back(bytes_of(where(gt(a, b), a, b)));
    r.push_back(bytes_of(pow(at, 1.3)));
    return r;
  };
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto one = run();
  omp_set_num_threads(2);
  const auto two = run();
  omp_set_num_threads(3);
  const auto three = run();
  omp_set_num_threads(saved);
  CHECK(one == two);
  CHECK(one == three);
}
