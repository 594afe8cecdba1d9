// Reductions: sum, mean, amax, amin, logsumexp, var, argmax.
// Forward values are checked against a brute-force reference written here (each output's reduced
// elements are collected by walking every index of x, then folded with std:: math), gradients with
// gradcheck and gradgradcheck in f64, over several, negative and repeated-in-error dims, keepdim
// both ways and non-contiguous inputs. The parallel paths (vertical, chunked) are checked against
// the same reference and for independence from the thread count.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::autograd;

namespace {

// Reference: the values of each output element's reduced set, in row-major order of x.
// `dims` are non-negative; empty = all.
std::vector<std::vector<double>> groups_of(const Tensor& x, std::vector<int> dims) {
  const std::vector<double> v = x.to_vector();
  const int nd = x.dim();
  if (dims.empty())
    for (int d = 0; d < nd; ++d) dims.push_back(d);
  auto reduced = [&](int d) { return std::find(dims.begin(), dims.end(), d) != dims.end(); };
  int64_t n_out = 1;
  for (int d = 0; d < nd; ++d)
    if (!reduced(d)) n_out *= x.size(d);
  std::vector<std::vector<double>> out(static_cast<size_t>(n_out));
  for (size_t i = 0; i < v.size(); ++i) {
    int64_t rem = int64_t(i), key = 0, scale = 1;
    for (int d = nd - 1; d >= 0; --d) {
      const int64_t idx = rem % x.size(d);
      rem /= x.size(d);
      if (!reduced(d)) {
        key += idx * scale;
        scale *= x.size(d);
      }
    }
    out[size_t(key)].push_back(v[i]);
  }
  return out;
}

using Fold = std::function<double(const std::vector<double>&)>;
std::vector<double> reference(const Tensor& x, std::vector<int> dims, const Fold& f) {
  std::vector<double> r;
  for (const auto& g : groups_of(x, std::move(dims))) r.push_back(f(g));
  return r;
}

double ref_sum(const std::vector<double>& g) { return std::accumulate(g.begin(), g.end(), 0.0); }
double ref_mean(const std::vector<double>& g) { return ref_sum(g) / double(g.size()); }
double ref_max(const std::vector<double>& g) { return *std::max_element(g.begin(), g.end()); }
double ref_min(const std::vector<double>& g) { return *std::min_element(g.begin(), g.end()); }
double ref_lse(const std::vector<double>& g) {
  // log(sum exp) computed in long double without shifting (inputs here are moderate)
  long double s = 0;
  for (double v : g) s += std::exp((long double)v);
  return double(std::log(s));
}
Fold ref_var(int64_t correction) {
  return [correction](const std::vector<double>& g) {
    const double m = ref_mean(g);
    double s = 0;
    for (double v : g) s += (v - m) * (v - m);
    return s / double(int64_t(g.size()) - correction);
  };
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double rtol, double atol = 0) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
    CHECK(std::abs(got[i] - want[i]) <= atol + rtol * std::abs(want[i]));
  }
}

Tensor randn64(const Dims& s, uint64_t seed) {
  Generator gen(seed);
  return randn(s, gen, opts(DType::f64));
}

}  // namespace

TEST_CASE("sum and mean match a brute-force reference over any dims, keepdim both ways") {
  Tensor x = randn64({3, 4, 5, 2}, 1);
  struct Case {
    Dims dims;
    std::vector<int> ref_dims;
  };
  const Case cases[] = {{{}, {}},        {{0}, {0}},          {{-1}, {3}},      {{1, 3}, {1, 3}},
                        {{-3, 0}, {1, 0}}, {{0, 1, 2, 3}, {0, 1, 2, 3}}, {{2}, {2}}};
  for (const Case& c : cases) {
    INFO("dims " << c.dims.str());
    for (bool keepdim : {false, true}) {
      Tensor s = sum(x, c.dims, keepdim), m = mean(x, c.dims, keepdim);
      check_close(s.to_vector(), reference(x, c.ref_dims, ref_sum), 1e-12, 1e-12);
      check_close(m.to_vector(), reference(x, c.ref_dims, ref_mean), 1e-12, 1e-12);
      // shape: reduced dims dropped, or kept as 1
      Dims want;
      for (int d = 0; d < 4; ++d) {
        const bool red = c.ref_dims.empty() || std::find(c.ref_dims.begin(), c.ref_dims.end(), d) != c.ref_dims.end();
        if (!red)
          want.push_back(x.size(d));
        else if (keepdim)
          want.push_back(1);
      }
      CHECK(s.sizes() == want);
    }
  }
}

TEST_CASE("reductions of non-contiguous, expanded and 0-dim inputs") {
  Tensor base = randn64({4, 6, 5}, 2);
  Tensor t = permute(base, {2, 0, 1});              // [5,4,6], no dim contiguous in order
  Tensor s = slice(base, 1, 1, 6, 2);               // [4,3,5], stepped
  Tensor e = expand(randn64({1, 5}, 3), {7, 5});    // stride 0
  for (const Tensor& x : {t, s, e}) {
    for (int d = 0; d < x.dim(); ++d) {
      check_close(sum(x, {d}).to_vector(), reference(x, {d}, ref_sum), 1e-12, 1e-12);
      check_close(amax(x, {d}).to_vector(), reference(x, {d}, ref_max), 0);
      check_close(var(x, {d}).to_vector(), reference(x, {d}, ref_var(1)), 1e-10, 1e-12);
    }
    check_close(mean(x, {0, -1}).to_vector(), reference(x, {0, x.dim() - 1}, ref_mean), 1e-12, 1e-12);
  }
  Tensor scalar = from_vector({2.5}, {}, opts(DType::f64));
  CHECK(sum(scalar).item() == 2.5);
  CHECK(sum(scalar, {0}).item() == 2.5);
  CHECK(amax(scalar, {-1}).item() == 2.5);
  CHECK(logsumexp(scalar, {0}).item() == doctest::Approx(2.5));
  CHECK(argmax(scalar, 0).item() == 0);
}

TEST_CASE("large reductions: vertical and chunked paths, f32 accuracy, thread-count independence") {
  Generator gen(11);
  // [N, C] summed over N: the innermost kept dim is contiguous (vertical path), N large enough
  // to be split into chunks. [1, big] summed fully: the chunked standard path.
  struct Case {
    Dims shape;
    Dims dims;
    std::vector<int> ref_dims;
  };
  const Case cases[] = {{{50000, 3}, {0}, {0}},        {{4000, 70}, {0}, {0}},   {{300000}, {}, {}},
                        {{7, 40000}, {1}, {1}},        {{20, 30, 40}, {0, 2}, {0, 2}},
                        {{2, 20000, 9}, {0, 1}, {0, 1}}};
  for (const Case& c : cases) {
    INFO("shape " << c.shape.str() << " dims " << c.dims.str());
    Tensor x32 = add(rand(c.shape, gen), 0.25);  // positive, so relative error is meaningful
    Tensor x64 = to_dtype(x32, DType::f64);
    const std::vector<double> want = reference(x64, c.ref_dims, ref_sum);
    // f32 accumulates in double: as accurate as the f64 reference up to the final rounding.
    check_close(sum(x32, c.dims).to_vector(), want, 1e-6);
    check_close(sum(x64, c.dims).to_vector(), want, 1e-12);
    check_close(var(x32, c.dims, 0).to_vector(), reference(x64, c.ref_dims, ref_var(0)), 1e-5);
    check_close(logsumexp(x32, c.dims).to_vector(), reference(x64, c.ref_dims, ref_lse), 1e-6);
    check_close(amin(x32, c.dims).to_vector(), reference(x64, c.ref_dims, ref_min), 0);
    // Bitwise identical for 1, 2 and 3 threads.
    const int saved = omp_get_max_threads();
    std::vector<std::vector<double>> runs;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      runs.push_back(sum(x32, c.dims).to_vector());
      runs.push_back(logsumexp(x32, c.dims).to_vector());
    }
    omp_set_num_threads(saved);
    for (size_t r = 2; r < runs.size(); ++r) CHECK(runs[r] == runs[r % 2]);
  }
}

TEST_CASE("amax and amin: values, NaN propagation, infinities, errors on empty reductions") {
  Tensor x = from_vector({1, 5, -2, 5, 0, -7, 3, 3, -7}, {3, 3}, opts(DType::f64));
  CHECK(amax(x, {1}).to_vector() == std::vector<double>{5, 5, 3});
  CHECK(amin(x, {1}).to_vector() == std::vector<double>{-2, -7, -7});
  CHECK(amax(x, {0}).to_vector() == std::vector<double>{5, 5, -2});
  CHECK(amax(x).item() == 5);
  CHECK(amin(x, {0, 1}, true).sizes() == Dims{1, 1});
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  Tensor y = from_vector({1, nan, 3, -inf, -inf, -inf, inf, 2, 1}, {3, 3});
  auto mx = amax(y, {1}).to_vector();
  CHECK(std::isnan(mx[0]));
  CHECK(mx[1] == -inf);
  CHECK(mx[2] == inf);
  CHECK(std::isnan(amin(y, {1}).to_vector()[0]));
  Tensor empty_rows = zeros({3, 0});
  CHECK_THROWS_WITH_AS(amax(empty_rows, {1}), doctest::Contains("amax: cannot reduce over an empty dimension"), Error);
  CHECK_THROWS_WITH_AS(amin(empty_rows), doctest::Contains("amin: cannot reduce"), Error);
  CHECK(amax(empty_rows, {0}).sizes() == Dims{0});  // no output element, nothing to reduce
}

TEST_CASE("amax and amin: tied extrema share the gradient equally") {
  // Row 0 has the max 5 twice: each gets g/2. Row 1 has three tied -7 minima.
  Tensor x = from_vector({1, 5, -2, 5, -7, -7, 0, -7}, {2, 4}, opts(DType::f64)).requires_grad_(true);
  Tensor g = from_vector({2.0, 3.0}, {2}, opts(DType::f64));
  backward(amax(x, {1}), g);
  CHECK(x.grad().to_vector() == std::vector<double>{0, 1, 0, 1, 0, 0, 3, 0});
  Tensor x2 = from_vector({1, 5, -2, 5, -7, -7, 0, -7}, {2, 4}, opts(DType::f64)).requires_grad_(true);
  backward(amin(x2, {-1}, true), reshape(g, {2, 1}));
  CHECK(x2.grad().to_vector() == std::vector<double>{0, 0, 2, 0, 1, 1, 0, 1});
  // Over all dims: the two 5s of the whole tensor share the scalar gradient.
  Tensor x3 = from_vector({1, 5, -2, 5, -7, -7, 0, -7}, {2, 4}, opts(DType::f64)).requires_grad_(true);
  backward(amax(x3));
  CHECK(x3.grad().to_vector() == std::vector<double>{0, 0.5, 0, 0.5, 0, 0, 0, 0});
}

TEST_CASE("logsumexp is stable for large and -inf inputs") {
  // log(e^1000 + e^1000) = 1000 + log 2; a naive exp would overflow to inf.
  Tensor x = from_vector({1000, 1000, -1000, -1001}, {2, 2}, opts(DType::f32));
  auto r = logsumexp(x, {1}).to_vector();
  CHECK(r[0] == doctest::Approx(1000 + std::log(2.0)).epsilon(1e-7));
  CHECK(r[1] == doctest::Approx(-1000 + std::log(1 + std::exp(-1.0))).epsilon(1e-7));
  const double inf = std::numeric_limits<double>::infinity();
  Tensor y = from_vector({-inf, -inf, -inf, 0, inf, 1}, {3, 2}, opts(DType::f64));
  auto q = logsumexp(y, {1}).to_vector();
  CHECK(q[0] == -inf);
  CHECK(q[1] == 0.0);  // log(exp(-inf) + exp(0)) = log(1): -inf contributes 0
  CHECK(q[2] == inf);
  CHECK(logsumexp(zeros({2, 0}), {1}).to_vector() == std::vector<double>{-inf, -inf});
  Tensor z = randn64({3, 4, 5}, 5);
  check_close(logsumexp(z, {0, -1}, true).to_vector(), reference(z, {0, 2}, ref_lse), 1e-12);
  CHECK(logsumexp(z, {0, -1}, true).sizes() == Dims{1, 4, 1});
}

TEST_CASE("var with corrections 0, 1, 2 over several dims") {
  Tensor x = randn64({4, 3, 5}, 6);
  for (int64_t c : {0, 1, 2})
    for (bool keepdim : {false, true}) {
      check_close(var(x, {0, 2}, c, keepdim).to_vector(), reference(x, {0, 2}, ref_var(c)), 1e-12);
      check_close(var(x, {}, c, keepdim).to_vector(), reference(x, {}, ref_var(c)), 1e-12);
      check_close(var(x, {-2}, c, keepdim).to_vector(), reference(x, {1}, ref_var(c)), 1e-12);
    }
  // A constant row has variance 0 exactly (two-pass: no cancellation).
  Tensor cst = full({2, 1000}, 1e8 + 0.1, opts(DType::f32));
  CHECK(var(cst, {1}).to_vector() == std::vector<double>{0, 0});
  // n - correction <= 0: NaN (0/0), as PyTorch.
  CHECK(std::isnan(var(from_vector({3.0}, {1}), {0}).item()));
  CHECK_THROWS_WITH_AS(var(x, {0}, -1), doctest::Contains("var: correction must be >= 0, got -1"), Error);
}

TEST_CASE("argmax: first index of the maximum, NaN wins, keepdim, integer inputs") {
  Tensor x = from_vector({1, 7, 7, 2, 9, 0, 9, 9, 3, 3, 3, 3}, {3, 4});
  Tensor a = argmax(x, 1);
  CHECK(a.dtype() == DType::i64);
  CHECK(a.to_vector() == std::vector<double>{1, 0, 0});
  CHECK(argmax(x, -2).to_vector() == std::vector<double>{1, 0, 1, 1});
  CHECK(argmax(x, 1, true).sizes() == Dims{3, 1});
  CHECK(argmax(transpose(x, 0, 1), 0).to_vector() == std::vector<double>{1, 0, 0});  // strided lines
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK(argmax(from_vector({1, 4, nan, 9, nan}, {5}), 0).item() == 2);
  CHECK(argmax(from_vector_i64({4, -2, 8, 8}, {4}), 0).item() == 2);
  Tensor r = randn64({6, 5, 4}, 9);
  const std::vector<double> rv = r.to_vector();
  const std::vector<double> got = argmax(r, 1).to_vector();
  for (int i = 0; i < 6; ++i)
    for (int k = 0; k < 4; ++k) {
      int best = 0;
      for (int j = 1; j < 5; ++j)
        if (rv[size_t(i * 20 + j * 4 + k)] > rv[size_t(i * 20 + best * 4 + k)]) best = j;
      CHECK(got[size_t(i * 4 + k)] == best);
    }
  CHECK_THROWS_WITH_AS(argmax(zeros({2, 0}), 1), doctest::Contains("argmax: cannot take the argmax of an empty dim"),
                       Error);
  CHECK_THROWS_WITH_AS(argmax(x, 2), doctest::Contains("argmax: dim 2 out of range for a 2-D tensor"), Error);
  // argmax records no graph
  Tensor l = randn64({3}, 1).requires_grad_(true);
  CHECK_FALSE(argmax(l, 0).requires_grad());
}

TEST_CASE("bad dims are reported with the op name") {
  Tensor x = zeros({2, 3});
  CHECK_THROWS_WITH_AS(sum(x, {2}), doctest::Contains("sum: dim 2 out of range for a 2-D tensor"), Error);
  CHECK_THROWS_WITH_AS(mean(x, {-3}), doctest::Contains("mean: dim -3 out of range"), Error);
  CHECK_THROWS_WITH_AS(amax(x, {0, -2}), doctest::Contains("amax: dim 0 repeated in [0,-2]"), Error);
  CHECK_THROWS_WITH_AS(logsumexp(x, {5}), doctest::Contains("logsumexp: dim 5 out of range"), Error);
  CHECK_THROWS_WITH_AS(var(x, {1, 1}), doctest::Contains("var: dim 1 repeated"), Error);
  CHECK_THROWS_WITH_AS(sum(from_vector_i64({1, 2}, {2})), doctest::Contains("sum: expected an f32 or f64 tensor"),
                       Error);
}

TEST_CASE("gradcheck and gradgradcheck of every reduction: several, negative dims, keepdim, non-contiguous") {
  Tensor a = randn64({3, 4, 5}, 21).requires_grad_(true);
  Tensor b = randn64({5, 4}, 22).requires_grad_(true);  // used transposed: non-contiguous [4,5]
  struct Case {
    Dims dims;
    bool keepdim;
  };
  const Case cases[] = {{{}, false}, {{1}, false}, {{-1}, true}, {{0, 2}, false}, {{-1, 0}, true}, {{0, 1, 2}, true}};
  using Op = std::function<Tensor(const Tensor&, const Dims&, bool)>;
  const std::pair<const char*, Op> ops[] = {
      {"sum", [](const Tensor& x, const Dims& d, bool k) { return sum(x, d, k); }},
      {"mean", [](const Tensor& x, const Dims& d, bool k) { return mean(x, d, k); }},
      {"amax", [](const Tensor& x, const Dims& d, bool k) { return amax(x, d, k); }},
      {"amin", [](const Tensor& x, const Dims& d, bool k) { return amin(x, d, k); }},
      {"logsumexp", [](const Tensor& x, const Dims& d, bool k) { return logsumexp(x, d, k); }},
      {"var", [](const Tensor& x, const Dims& d, bool k) { return var(x, d, 1, k); }},
      {"var0", [](const Tensor& x, const Dims& d, bool k) { return var(x, d, 0, k); }},
  };
  for (const auto& [name, op] : ops)
    for (const Case& c : cases) {
      INFO(name << " dims " << c.dims.str() << " keepdim " << c.keepdim);
      // Multiply by x afterwards so the second derivative is not trivially zero for linear ops.
      auto f = [&](const TensorList& xs) {
        Tensor r = op(xs[0], c.dims, c.keepdim);
        return mul(r, r);
      };
      CHECK(gradcheck(f, {a}) == "");
      CHECK(gradgradcheck(f, {a}) == "");
    }
  for (const auto& [name, op] : ops) {
    INFO(name << " on a transposed input");
    auto f = [&](const TensorList& xs) {
      Tensor t = transpose(xs[0], 0, 1);
      Tensor r = op(t, {-1}, false);
      return mul(r, r);
    };
    CHECK(gradcheck(f, {b}) == "");
    CHECK(gradgradcheck(f, {b}) == "");
  }
}
