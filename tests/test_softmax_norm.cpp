// softmax, log_softmax, cross_entropy, layer_norm, group_norm.
// Forward values against plain loops written here (std::exp / std::log / std::sqrt in double);
// gradients with gradcheck and gradgradcheck (f64) along every dim, on non-contiguous inputs, with
// and without affine parameters; the fused first-order backward against the differentiable
// composite used under create_graph; error messages for bad shapes and targets.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <limits>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "tensor/kernels/reduce.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::autograd;

namespace {

Tensor randn64(const Dims& s, uint64_t seed) {
  Generator gen(seed);
  return randn(s, gen, opts(DType::f64));
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double rtol, double atol) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
    CHECK(std::abs(got[i] - want[i]) <= atol + rtol * std::abs(want[i]));
  }
}

// Reference softmax / log_softmax along `dim` of a row-major value vector.
std::vector<double> ref_softmax(const std::vector<double>& v, const Dims& sizes, int dim, bool log) {
  std::vector<double> out(v.size());
  int64_t inner = 1;
  for (int d = dim + 1; d < sizes.size(); ++d) inner *= sizes[d];
  const int64_t n = sizes[dim], outer = int64_t(v.size()) / (n * inner);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      double m = -INFINITY;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, v[size_t((o * n + j) * inner + i)]);
      double s = 0;
      for (int64_t j = 0; j < n; ++j) s += std::exp(v[size_t((o * n + j) * inner + i)] - m);
      for (int64_t j = 0; j < n; ++j) {
        const double x = v[size_t((o * n + j) * inner + i)];
        out[size_t((o * n + j) * inner + i)] = log ? x - m - std::log(s) : std::exp(x - m) / s;
      }
    }
  return out;
}

// Reference normalisation of rows [A, G, Cg*HW] with per-channel w, b (empty: none).
std::vector<double> ref_norm(const std::vector<double>& x, int64_t a, int64_t groups, int64_t cg, int64_t hw,
                             const std::vector<double>& w, const std::vector<double>& b, double eps) {
  std::vector<double> y(x.size());
  const int64_t k = cg * hw;
  for (int64_t r = 0; r < a * groups; ++r) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < k; ++i) m += x[size_t(r * k + i)];
    m /= double(k);
    for (int64_t i = 0; i < k; ++i) v += (x[size_t(r * k + i)] - m) * (x[size_t(r * k + i)] - m);
    v /= double(k);
    for (int64_t i = 0; i < k; ++i) {
      const int64_t ch = (r % groups) * cg + i / hw;
      double yv = (x[size_t(r * k + i)] - m) / std::sqrt(v + eps);
      if (!w.empty()) yv *= w[size_t(ch)];
      if (!b.empty()) yv += b[size_t(ch)];
      y[size_t(r * k + i)] = yv;
    }
  }
  return y;
}

// Gradients of sum(f(inputs) * v) w.r.t. the inputs, with or without create_graph.
TensorList grads_of(const std::function<Tensor(const TensorList&)>& f, const TensorList& ins, const Tensor& v,
                    bool create_graph) {
  Tensor out = f(ins);
  return grad({out}, ins, {v}, create_graph, true);
}

}  // namespace

TEST_CASE("softmax and log_softmax match a reference along every dim, also on non-contiguous input") {
  Tensor x = randn64({3, 4, 5}, 1);
  for (int d = 0; d < 3; ++d) {
    INFO("dim " << d);
    check_close(softmax(x, d).to_vector(), ref_softmax(x.to_vector(), x.sizes(), d, false), 1e-13, 1e-15);
    check_close(log_softmax(x, d - 3).to_vector(), ref_softmax(x.to_vector(), x.sizes(), d, true), 1e-13, 1e-13);
  }
  Tensor t = permute(randn64({5, 3, 4}, 2), {1, 2, 0});  // [3,4,5], strided
  Tensor tc = contiguous(t);
  for (int d = 0; d < 3; ++d) {
    check_close(softmax(t, d).to_vector(), ref_softmax(tc.to_vector(), tc.sizes(), d, false), 1e-13, 1e-15);
    check_close(log_softmax(t, d).to_vector(), ref_softmax(tc.to_vector(), tc.sizes(), d, true), 1e-13, 1e-13);
  }
  // f32 rows: sums to one
  Generator gen(3);
  Tensor y = softmax(randn({64, 1000}, gen), -1);
  for (double s : sum(to_dtype(y, DType::f64), {1}).to_vector()) CHECK(s == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(softmax(from_vector({4.0}, {}, opts(DType::f64)), 0).item() == 1.0);
}

TEST_CASE("vexp (the vectorised exp of softmax and logsumexp) is within 2 ulp of exp, with exact special values") {
  // Relative error against exp in double over the normal range, on a fine grid.
  double worst = 0;
  for (float x = -87.3f; x <= 88.0f; x += 0.00123f) {
    const double want = std::exp(double(x));
    worst = std::max(worst, std::abs(double(kernels::vexp(x)) - want) / want);
  }
  CHECK(worst < 2 * 5.97e-8);  // 2 ulp of float (2^-24 relative half-ulp spacing is 5.96e-8)
  CHECK(kernels::vexp(0.0f) == 1.0f);
  CHECK(kernels::vexp(-INFINITY) == 0.0f);
  CHECK(kernels::vexp(-100.0f) == 0.0f);  // below the normal range: flushed to zero
  CHECK(kernels::vexp(INFINITY) == INFINITY);
  CHECK(std::isnan(kernels::vexp(NAN)));
  CHECK(std::isnan(kernels::vexp(-NAN)));
  CHECK(kernels::vexp(1.0) == std::exp(1.0));  // double: the C library
}

TEST_CASE("softmax is stable for large logits and masks -inf entries") {
  Tensor x = from_vector({1000, 1001, -INFINITY, 1000}, {2, 2});
  auto s = softmax(x, 1).to_vector();
  const double e = std::exp(1.0);
  CHECK(s[0] == doctest::Approx(1 / (1 + e)).epsilon(1e-6));
  CHECK(s[1] == doctest::Approx(e / (1 + e)).epsilon(1e-6));
  CHECK(s[2] == 0.0);
  CHECK(s[3] == 1.0);
  auto l = log_softmax(x, 1).to_vector();
  CHECK(l[0] == doctest::Approx(-std::log(1 + e)).epsilon(1e-6));
  CHECK(l[2] == -INFINITY);
  CHECK(l[3] == 0.0);
  CHECK_THROWS_WITH_AS(softmax(x, 2), doctest::Contains("softmax: dim 2 out of range for a 2-D tensor"), Error);
  CHECK_THROWS_WITH_AS(log_softmax(x, -3), doctest::Contains("log_softmax: dim -3 out of range"), Error);
  CHECK_THROWS_WITH_AS(softmax(from_vector_i64({1, 2}, {2}), 0), doctest::Contains("softmax: expected an f32 or f64"),
                       Error);
}

TEST_CASE("gradcheck and gradgradcheck of softmax and log_softmax along every dim") {
  Tensor x = randn64({3, 4, 2}, 4).requires_grad_(true);
  Tensor xt = randn64({4, 3}, 5).requires_grad_(true);  // used transposed
  for (int d = -3; d < 3; ++d) {
    INFO("dim " << d);
    auto fs = [d](const TensorList& xs) { return softmax(xs[0], d); };
    auto fl = [d](const TensorList& xs) { return log_softmax(xs[0], d); };
    CHECK(gradcheck(fs, {x}) == "");
    CHECK(gradgradcheck(fs, {x}) == "");
    CHECK(gradcheck(fl, {x}) == "");
    CHECK(gradgradcheck(fl, {x}) == "");
  }
  for (int d = 0; d < 2; ++d) {
    auto fs = [d](const TensorList& xs) { return softmax(transpose(xs[0], 0, 1), d); };
    auto fl = [d](const TensorList& xs) { return log_softmax(transpose(xs[0], 0, 1), d); };
    CHECK(gradcheck(fs, {xt}) == "");
    CHECK(gradgradcheck(fs, {xt}) == "");
    CHECK(gradcheck(fl, {xt}) == "");
    CHECK(gradgradcheck(fl, {xt}) == "");
  }
}

TEST_CASE("softmax backward: the fused kernel and the create_graph composite agree") {
  Tensor x = randn64({6, 7, 5}, 6).requires_grad_(true);
  Tensor v = randn64({6, 7, 5}, 7);
  Tensor vt = transpose(randn64({6, 5, 7}, 8), 1, 2);  // a strided output gradient
  for (int d = 0; d < 3; ++d)
    for (bool log : {false, true})
      for (const Tensor& g : {v, vt}) {
        auto f = [d, log](const TensorList& xs) { return log ? log_softmax(xs[0], d) : softmax(xs[0], d); };
        Tensor fused = grads_of(f, {x}, g, false)[0];
        Tensor composite = grads_of(f, {x}, g, true)[0];
        check_close(fused.to_vector(), composite.to_vector(), 1e-12, 1e-14);
      }
}

TEST_CASE("cross_entropy: values, gradients, double backward, non-contiguous logits") {
  Tensor logits = randn64({5, 4}, 9);
  Tensor target = from_vector_i64({3, 0, 1, 3, 2}, {5});
  const std::vector<double> lv = logits.to_vector();
  const int64_t tv[] = {3, 0, 1, 3, 2};
  double want = 0;
  for (int i = 0; i < 5; ++i) {
    double s = 0;
    for (int c = 0; c < 4; ++c) s += std::exp(lv[size_t(i * 4 + c)]);
    want += std::log(s) - lv[size_t(i * 4 + tv[i])];
  }
  want /= 5;
  CHECK(cross_entropy(logits, target).item() == doctest::Approx(want).epsilon(1e-13));
  CHECK(cross_entropy(logits, target).sizes() == Dims{});
  // Large logits: -log_softmax stays finite.
  Tensor big = from_vector({1000, 0, -1000, 1000}, {2, 2});
  CHECK(cross_entropy(big, from_vector_i64({1, 0}, {2})).item() == doctest::Approx((1000.0 + 2000.0) / 2));

  Tensor l = logits.detach().requires_grad_(true);
  auto f = [&target](const TensorList& xs) { return cross_entropy(xs[0], target); };
  CHECK(gradcheck(f, {l}) == "");
  CHECK(gradgradcheck(f, {l}) == "");
  Tensor lt = randn64({4, 5}, 10).requires_grad_(true);  // logits = lt^T, strided
  auto ft = [&target](const TensorList& xs) { return mul(cross_entropy(transpose(xs[0], 0, 1), target), 3.0); };
  CHECK(gradcheck(ft, {lt}) == "");
  CHECK(gradgradcheck(ft, {lt}) == "");
  // Closed form of the first gradient: (softmax - onehot) / N.
  Tensor gl = grad({cross_entropy(l, target)}, {l})[0];
  const std::vector<double> sm = ref_softmax(lv, {5, 4}, 1, false), gv = gl.to_vector();
  for (int i = 0; i < 5; ++i)
    for (int c = 0; c < 4; ++c)
      CHECK(gv[size_t(i * 4 + c)] == doctest::Approx((sm[size_t(i * 4 + c)] - (c == tv[i] ? 1 : 0)) / 5).epsilon(1e-12));
  // Fused and composite first-order gradients agree.
  Tensor gc = grad({cross_entropy(l, target)}, {l}, {}, /*create_graph=*/true)[0];
  check_close(gc.to_vector(), gv, 1e-12, 1e-15);
}

TEST_CASE("cross_entropy reports bad targets and shapes") {
  Tensor logits = zeros({3, 4});
  CHECK_THROWS_WITH_AS(cross_entropy(logits, from_vector_i64({0, 4, 1}, {3})),
                       doctest::Contains("cross_entropy: target 4 out of range [0, 4) at index 1"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, from_vector_i64({0, 1, -1}, {3})),
                       doctest::Contains("cross_entropy: target -1 out of range [0, 4) at index 2"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, from_vector({0, 1, 2}, {3})),
                       doctest::Contains("cross_entropy: expected an i64 target, got f32"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, from_vector_i64({0, 1}, {2})),
                       doctest::Contains("cross_entropy: target of shape [2] does not match logits of shape [3,4]"),
                       Error);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({3, 4, 2}), from_vector_i64({0, 1, 2}, {3})),
                       doctest::Contains("cross_entropy: expected logits of shape [N, C], got [3,4,2]"), Error);
}

TEST_CASE("layer_norm matches a reference: 1-D and 2-D normalized shapes, optional affine, strided input") {
  Tensor x = randn64({3, 4, 5}, 11);
  Tensor w1 = randn64({5}, 12), b1 = randn64({5}, 13);
  Tensor w2 = randn64({4, 5}, 14), b2 = randn64({4, 5}, 15);
  const auto xv = x.to_vector();
  check_close(layer_norm(x, {5}, w1, b1, 1e-5).to_vector(),
              ref_norm(xv, 12, 1, 5, 1, w1.to_vector(), b1.to_vector(), 1e-5), 1e-12, 1e-12);
  check_close(layer_norm(x, {4, 5}, w2, b2, 1e-3).to_vector(),
              ref_norm(xv, 3, 1, 20, 1, w2.to_vector(), b2.to_vector(), 1e-3), 1e-12, 1e-12);
  check_close(layer_norm(x, {3, 4, 5}).to_vector(), ref_norm(xv, 1, 1, 60, 1, {}, {}, 1e-5), 1e-12, 1e-12);
  check_close(layer_norm(x, {5}, Tensor(), b1).to_vector(), ref_norm(xv, 12, 1, 5, 1, {}, b1.to_vector(), 1e-5),
              1e-12, 1e-12);
  Tensor t = transpose(randn64({5, 4}, 16), 0, 1);  // [4,5] strided
  check_close(layer_norm(t, {5}, w1).to_vector(),
              ref_norm(contiguous(t).to_vector(), 4, 1, 5, 1, w1.to_vector(), {}, 1e-5), 1e-12, 1e-12);
  // f32 with a large common offset: statistics in double, centring without cancellation.
  Generator gen(17);
  Tensor xf = add(randn({8, 256}, gen), 1e4);
  check_close(layer_norm(xf, {256}).to_vector(), ref_norm(xf.to_vector(), 8, 1, 256, 1, {}, {}, 1e-5), 2e-3, 2e-3);
}

TEST_CASE("group_norm matches a reference for 2-, 3- and 4-D inputs and several group counts") {
  struct Case {
    Dims shape;
    int64_t groups;
  };
  const Case cases[] = {{{2, 6, 3, 4}, 3}, {{2, 6, 3, 4}, 1}, {{2, 6, 3, 4}, 6}, {{3, 4}, 2}, {{2, 8, 5}, 4}};
  for (const Case& c : cases) {
    INFO("shape " << c.shape.str() << " groups " << c.groups);
    Tensor x = randn64(c.shape, 20);
    const int64_t ch = c.shape[1];
    int64_t hw = 1;
    for (int d = 2; d < c.shape.size(); ++d) hw *= c.shape[d];
    Tensor w = randn64({ch}, 21), b = randn64({ch}, 22);
    check_close(group_norm(x, c.groups, w, b, 1e-5).to_vector(),
                ref_norm(x.to_vector(), c.shape[0], c.groups, ch / c.groups, hw, w.to_vector(), b.to_vector(), 1e-5),
                1e-12, 1e-12);
    check_close(group_norm(x, c.groups).to_vector(),
                ref_norm(x.to_vector(), c.shape[0], c.groups, ch / c.groups, hw, {}, {}, 1e-5), 1e-12, 1e-12);
  }
  Tensor p = permute(randn64({2, 3, 6, 4}, 23), {0, 2, 1, 3});  // [2,6,3,4] strided
  check_close(group_norm(p, 2).to_vector(), ref_norm(contiguous(p).to_vector(), 2, 2, 3, 12, {}, {}, 1e-5), 1e-12,
              1e-12);
}

TEST_CASE("gradcheck and gradgradcheck of layer_norm and group_norm w.r.t. input, weight and bias") {
  Tensor x = randn64({3, 2, 4}, 30).requires_grad_(true);
  Tensor w = randn64({4}, 31).requires_grad_(true), b = randn64({4}, 32).requires_grad_(true);
  Tensor w2 = randn64({2, 4}, 33).requires_grad_(true), b2 = randn64({2, 4}, 34).requires_grad_(true);
  auto ln1 = [](const TensorList& xs) { return layer_norm(xs[0], {4}, xs[1], xs[2], 1e-5); };
  CHECK(gradcheck(ln1, {x, w, b}) == "");
  CHECK(gradgradcheck(ln1, {x, w, b}) == "");
  auto ln2 = [](const TensorList& xs) { return layer_norm(xs[0], {2, 4}, xs[1], xs[2], 1e-3); };
  CHECK(gradcheck(ln2, {x, w2, b2}) == "");
  CHECK(gradgradcheck(ln2, {x, w2, b2}) == "");
  auto ln0 = [](const TensorList& xs) { return layer_norm(xs[0], {4}); };
  CHECK(gradcheck(ln0, {x}) == "");
  CHECK(gradgradcheck(ln0, {x}) == "");
  // weight only requires grad; x is a constant
  Tensor xc = x.detach();
  auto lnw = [&xc](const TensorList& xs) { return layer_norm(xc, {4}, xs[0], xs[1]); };
  CHECK(gradcheck(lnw, {w, b}) == "");
  CHECK(gradgradcheck(lnw, {w, b}) == "");
  // strided input
  Tensor xt = randn64({4, 3}, 35).requires_grad_(true);
  auto lnt = [](const TensorList& xs) { return layer_norm(transpose(xs[0], 0, 1), {4}, xs[1], xs[2]); };
  CHECK(gradcheck(lnt, {xt, w, b}) == "");
  CHECK(gradgradcheck(lnt, {xt, w, b}) == "");

  Tensor y = randn64({2, 6, 2, 3}, 36).requires_grad_(true);
  Tensor gw = randn64({6}, 37).requires_grad_(true), gb = randn64({6}, 38).requires_grad_(true);
  for (int64_t groups : {1, 3, 6}) {
    INFO("groups " << groups);
    auto gn = [groups](const TensorList& xs) { return group_norm(xs[0], groups, xs[1], xs[2], 1e-5); };
    CHECK(gradcheck(gn, {y, gw, gb}) == "");
    CHECK(gradgradcheck(gn, {y, gw, gb}) == "");
  }
  auto gn0 = [](const TensorList& xs) { return group_norm(xs[0], 2); };
  CHECK(gradcheck(gn0, {y}) == "");
  CHECK(gradgradcheck(gn0, {y}) == "");
  Tensor yp = randn64({2, 3, 6}, 39).requires_grad_(true);  // permuted to [2,6,3]
  auto gnp = [](const TensorList& xs) { return group_norm(permute(xs[0], {0, 2, 1}), 3, xs[1], xs[2]); };
  CHECK(gradcheck(gnp, {yp, gw, gb}) == "");
  CHECK(gradgradcheck(gnp, {yp, gw, gb}) == "");
}

TEST_CASE("norm backward: fused kernels equal the composite, f32 large sizes, thread-count independent") {
  Generator gen(40);
  struct Case {
    bool layer;
    Dims shape;
    int64_t groups;
  };
  const Case cases[] = {{true, {300, 4, 64}, 0}, {true, {5000, 8}, 0}, {false, {8, 32, 9, 9}, 8},
                        {false, {3, 4, 70, 70}, 2}};
  for (const Case& c : cases) {
    INFO((c.layer ? "layer_norm " : "group_norm ") << c.shape.str());
    Tensor x = add(mul(randn(c.shape, gen), 2.0), 0.5).requires_grad_(true);
    const Dims ps = c.layer ? Dims{c.shape[c.shape.size() - 1]} : Dims{c.shape[1]};
    Tensor w = add(randn(ps, gen), 1.0).requires_grad_(true), b = randn(ps, gen).requires_grad_(true);
    Tensor v = randn(c.shape, gen);
    auto f = [&c](const TensorList& xs) {
      return c.layer ? layer_norm(xs[0], {xs[1].size(0)}, xs[1], xs[2]) : group_norm(xs[0], c.groups, xs[1], xs[2]);
    };
    TensorList fused = grads_of(f, {x, w, b}, v, false);
    TensorList composite = grads_of(f, {x, w, b}, v, true);
    for (int i = 0; i < 3; ++i) {
      INFO("gradient " << i);
      check_close(fused[size_t(i)].to_vector(), composite[size_t(i)].to_vector(), 2e-3, 2e-3);
    }
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    TensorList one = grads_of(f, {x, w, b}, v, false);
    omp_set_num_threads(3);
    TensorList three = grads_of(f, {x, w, b}, v, false);
    omp_set_num_threads(saved);
    for (int i = 0; i < 3; ++i) CHECK(one[size_t(i)].to_vector() == three[size_t(i)].to_vector());
  }
}

TEST_CASE("layer_norm and group_norm report bad shapes") {
  Tensor x = zeros({2, 6, 4});
  CHECK_THROWS_WITH_AS(layer_norm(x, {6}),
                       doctest::Contains("layer_norm: normalized_shape [6] does not match the trailing dims of the "
                                         "input of shape [2,6,4]"),
                       Error);
  CHECK_THROWS_WITH_AS(layer_norm(x, {1, 2, 6, 4}), doctest::Contains("does not match the trailing dims"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(x, {4}, zeros({5})),
                       doctest::Contains("layer_norm: weight of shape [5] does not match the expected shape [4]"), Error);
  CHECK_THROWS_WITH_AS(layer_norm(x, {}), doctest::Contains("layer_norm: normalized_shape must not be empty"), Error);
  CHECK_THROWS_WITH_AS(group_norm(x, 4), doctest::Contains("group_norm: 6 channels are not divisible into 4 groups"),
                       Error);
  CHECK_THROWS_WITH_AS(group_norm(x, 0), doctest::Contains("group_norm: num_groups must be positive, got 0"), Error);
  CHECK_THROWS_WITH_AS(group_norm(zeros({6}), 2), doctest::Contains("group_norm: expected an input [N, C, ...]"),
                       Error);
  CHECK_THROWS_WITH_AS(group_norm(x, 3, Tensor(), zeros({4})),
                       doctest::Contains("group_norm: bias of shape [4] does not match the expected shape [6]"), Error);
  CHECK_THROWS_WITH_AS(group_norm(x, 3, zeros({6}, opts(DType::f64))), doctest::Contains("group_norm: dtype mismatch"),
                       Error);
}
