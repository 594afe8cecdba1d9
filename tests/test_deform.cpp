// deform_conv2d (modulated deformable convolution, DCNv2): forward against a naive reference
// written here from the definition (direct sums, bilinear sampling with explicit corner checks),
// closed-form cases (zero offsets = conv, integer offsets = shifts), the per-point plan form of the
// kernel against the direct per-element form (what a CUDA thread computes), gradcheck in f64,
// parity with torchvision.ops.deform_conv2d (tests/parity/ref_deform.py, including Aurora's
// batch-folded layout), the once-differentiable error, thread-count independence and errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <omp.h>
#include <unistd.h>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "io/safetensors.h"
#include "tensor/kernels/deform.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::autograd;

namespace {

// ---- Naive reference ------------------------------------------------------------------------

// Bilinear sample of plane [H, W] at (y, x): zero outside (-1, H) x (-1, W), corners outside the
// image read zero (torchvision's bilinear_interpolate, written out independently).
double ref_sample(const std::vector<double>& v, int64_t base, int64_t H, int64_t W, double y, double x) {
  if (y <= -1 || y >= double(H) || x <= -1 || x >= double(W)) return 0.0;
  const double y0 = std::floor(y), x0 = std::floor(x);
  double s = 0;
  for (int dy = 0; dy <= 1; ++dy)
    for (int dx = 0; dx <= 1; ++dx) {
      const int64_t yy = int64_t(y0) + dy, xx = int64_t(x0) + dx;
      if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
      const double wy = dy ? y - y0 : 1 - (y - y0), wx = dx ? x - x0 : 1 - (x - x0);
      s += wy * wx * v[size_t(base + yy * W + xx)];
    }
  return s;
}

// out[n, o, oy, ox] = b[o] + sum_{c in o's group, i, j} W[o, c, i, j] * m * sample(x[n, c], y, x).
std::vector<double> ref_deform(const Tensor& xt, const Tensor& offt, const Tensor& wt, const Tensor& bt,
                               const Tensor& mt, const Conv2dParams& p, Dims& out_sizes) {
  const std::vector<double> x = xt.to_vector(), off = offt.to_vector(), w = wt.to_vector();
  const std::vector<double> b = bt.defined() ? bt.to_vector() : std::vector<double>();
  const std::vector<double> m = mt.defined() ? mt.to_vector() : std::vector<double>();
  const int64_t N = xt.size(0), C = xt.size(1), H = xt.size(2), W = xt.size(3);
  const int64_t O = wt.size(0), Cg = wt.size(1), kh = wt.size(2), kw = wt.size(3);
  const int64_t Ho = offt.size(2), Wo = offt.size(3);
  const int64_t G = offt.size(1) / (2 * kh * kw), per_group = C / G, Og = O / p.groups;
  out_sizes = Dims({N, O, Ho, Wo});
  std::vector<double> out(size_t(N * O * Ho * Wo), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oy = 0; oy < Ho; ++oy)
        for (int64_t ox = 0; ox < Wo; ++ox) {
          double s = b.empty() ? 0.0 : b[size_t(o)];
          for (int64_t cl = 0; cl < Cg; ++cl) {
            const int64_t c = (o / Og) * Cg + cl, g = c / per_group;
            for (int64_t i = 0; i < kh; ++i)
              for (int64_t j = 0; j < kw; ++j) {
                const int64_t k = i * kw + j;
                const double dy = off[size_t(((n * 2 * G * kh * kw + g * 2 * kh * kw + 2 * k) * Ho + oy) * Wo + ox)];
                const double dx = off[size_t(((n * 2 * G * kh * kw + g * 2 * kh * kw + 2 * k + 1) * Ho + oy) * Wo + ox)];
                const double mv = m.empty() ? 1.0 : m[size_t(((n * G * kh * kw + g * kh * kw + k) * Ho + oy) * Wo + ox)];
                const double y = double(oy * p.stride_h - p.pad_h + i * p.dilation_h) + dy;
                const double xx = double(ox * p.stride_w - p.pad_w + j * p.dilation_w) + dx;
                s += w[size_t(((o * Cg + cl) * kh + i) * kw + j)] * mv * ref_sample(x, (n * C + c) * H * W, H, W, y, xx);
              }
          }
          out[size_t(((n * O + o) * Ho + oy) * Wo + ox)] = s;
        }
  return out;
}

// ---- Inputs ---------------------------------------------------------------------------------

// Offsets in [-2, 2) whose fractional part is in [0.05, 0.95]: sampling points cross the image
// border but stay away from the integer grid, where bilinear sampling has kinks (gradcheck's
// central differences must not straddle one).
Tensor fractional_offsets(const Dims& sizes, Generator& gen, DType t = DType::f64) {
  NoGradGuard no_grad;
  Tensor whole = sub(to_dtype(randint(sizes, 4, gen), DType::f64), 2.0);
  Tensor frac = add(mul(rand(sizes, gen, opts(DType::f64)), 0.9), 0.05);
  return to_dtype(add(whole, frac), t);
}

struct Case {
  int64_t N = 2, Cin = 4, Cout = 6, H = 5, W = 5, kh = 3, kw = 3, G = 1;
  Conv2dParams p = Conv2dParams::make(1, 1);
  bool mask = true, bias = true;
  int64_t Ho() const { return (H + 2 * p.pad_h - (p.dilation_h * (kh - 1) + 1)) / p.stride_h + 1; }
  int64_t Wo() const { return (W + 2 * p.pad_w - (p.dilation_w * (kw - 1) + 1)) / p.stride_w + 1; }
};

struct Inputs {
  Tensor x, offset, weight, bias, mask;
  TensorList list() const { return {x, offset, weight, bias, mask}; }
};

Inputs make_inputs(const Case& c, uint64_t seed, DType t = DType::f64) {
  Generator gen(seed);
  Inputs in;
  in.x = randn({c.N, c.Cin, c.H, c.W}, gen, opts(t));
  in.offset = fractional_offsets({c.N, 2 * c.G * c.kh * c.kw, c.Ho(), c.Wo()}, gen, t);
  in.weight = mul(randn({c.Cout, c.Cin / c.p.groups, c.kh, c.kw}, gen, opts(t)), 0.5);
  if (c.bias) in.bias = randn({c.Cout}, gen, opts(t));
  if (c.mask) in.mask = mul(rand({c.N, c.G * c.kh * c.kw, c.Ho(), c.Wo()}, gen, opts(t)), 2.0);
  return in;
}

Tensor run(const Inputs& in, const Conv2dParams& p) { return deform_conv2d(in.x, in.offset, in.weight, in.bias, in.mask, p); }

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}
double max_abs(const std::vector<double>& a) {
  double m = 0;
  for (double v : a) m = std::max(m, std::abs(v));
  return m;
}

void check_against_naive(const Case& c, uint64_t seed) {
  const Inputs in = make_inputs(c, seed);
  Dims sizes;
  const std::vector<double> want = ref_deform(in.x, in.offset, in.weight, in.bias, in.mask, c.p, sizes);
  Tensor y = run(in, c.p);
  REQUIRE(y.sizes() == sizes);
  CHECK(max_abs(want) > 0.1);  // a non-trivial case
  CHECK(max_abs_diff(y.to_vector(), want) <= 1e-12 * std::max(1.0, max_abs(want)));
}

}  // namespace

// ---- Forward --------------------------------------------------------------------------------

TEST_CASE("deform_conv2d: forward matches the naive reference (mask, bias, stride, dilation, groups)") {
  Case c;
  SUBCASE("basic with mask and bias") {}
  SUBCASE("no mask (DCNv1), no bias") { c.mask = false, c.bias = false; }
  SUBCASE("stride 2, dilation 2, padding 2") { c.H = 9, c.W = 8, c.p = Conv2dParams::make(2, 2, 2); }
  SUBCASE("asymmetric kernel, stride and padding") {
    c.H = 7, c.W = 9, c.kh = 3, c.kw = 2;
    c.p = {1, 2, 0, 1, 2, 1, 1};
  }
  SUBCASE("two offset groups") { c.G = 2; }
  SUBCASE("two weight groups") { c.p.groups = 2; }
  SUBCASE("two weight groups, four offset groups") { c.Cin = 8, c.Cout = 4, c.G = 4, c.p.groups = 2; }
  SUBCASE("Aurora batch folding: B = 3 weight and offset groups, padding 1") {
    c.N = 1, c.Cin = 3 * 4, c.Cout = 3 * 5, c.H = c.W = 6, c.G = 3, c.p.groups = 3, c.bias = false;
  }
  check_against_naive(c, 7);
}

TEST_CASE("deform_conv2d: zero offsets and unit mask give the ordinary convolution") {
  // out[o, y, x] = b[o] + sum_{c, i, j} W[o, c, i, j] x[c, y - 1 + i, x - 1 + j] (zero padding),
  // summed here directly, with no bilinear sampling at all.
  Generator gen(3);
  const int64_t C = 3, O = 2, H = 4, W = 5;
  Tensor x = randn({1, C, H, W}, gen, opts(DType::f64));
  Tensor w = randn({O, C, 3, 3}, gen, opts(DType::f64));
  Tensor b = randn({O}, gen, opts(DType::f64));
  Tensor off = zeros({1, 18, H, W}, opts(DType::f64));
  Tensor m = ones({1, 9, H, W}, opts(DType::f64));
  const std::vector<double> xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector();
  std::vector<double> want;
  for (int64_t o = 0; o < O; ++o)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t xx = 0; xx < W; ++xx) {
        double s = bv[size_t(o)];
        for (int64_t c = 0; c < C; ++c)
          for (int64_t i = 0; i < 3; ++i)
            for (int64_t j = 0; j < 3; ++j) {
              const int64_t yy = y - 1 + i, xc = xx - 1 + j;
              if (yy >= 0 && yy < H && xc >= 0 && xc < W)
                s += wv[size_t(((o * C + c) * 3 + i) * 3 + j)] * xv[size_t((c * H + yy) * W + xc)];
            }
        want.push_back(s);
      }
  const Conv2dParams p = Conv2dParams::make(1, 1);
  CHECK(max_abs_diff(deform_conv2d(x, off, w, b, m, p).to_vector(), want) < 1e-12);
  CHECK(max_abs_diff(deform_conv2d(x, off, w, b, Tensor(), p).to_vector(), want) < 1e-12);
}

TEST_CASE("deform_conv2d: a 1x1 kernel with offset (dy, dx) is a shift; the mask scales it") {
  // out[y, x] = m * x[y + dy, x + dx] for integer (dy, dx), 0 where that leaves the image;
  // (dy, dx) = (0.5, 0): the average of rows y and y + 1 (row H-1: half of it).
  const int64_t H = 4, W = 5;
  std::vector<double> v;
  for (int64_t i = 0; i < H * W; ++i) v.push_back(double(i + 1));
  Tensor x = from_vector(v, {1, 1, H, W}, opts(DType::f64));
  Tensor w = ones({1, 1, 1, 1}, opts(DType::f64));
  auto shifted = [&](double dy, double dx, double m) {
    Tensor off = cat({full({1, 1, H, W}, dy, opts(DType::f64)), full({1, 1, H, W}, dx, opts(DType::f64))}, 1);
    return deform_conv2d(x, off, w, Tensor(), full({1, 1, H, W}, m, opts(DType::f64)), {}).to_vector();
  };
  const std::vector<double> a = shifted(1, -2, 0.5);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t xx = 0; xx < W; ++xx) {
      const int64_t sy = y + 1, sx = xx - 2;
      const double want = (sy < H && sx >= 0) ? 0.5 * v[size_t(sy * W + sx)] : 0.0;
      CHECK(a[size_t(y * W + xx)] == doctest::Approx(want).epsilon(1e-14));
    }
  const std::vector<double> h = shifted(0.5, 0, 1);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t xx = 0; xx < W; ++xx) {
      const double below = y + 1 < H ? v[size_t((y + 1) * W + xx)] : 0.0;
      CHECK(h[size_t(y * W + xx)] == doctest::Approx(0.5 * (v[size_t(y * W + xx)] + below)).epsilon(1e-14));
    }
  // Far outside (and NaN-free for huge offsets): all zero.
  for (double big : {-1e30, 1e30, 37.5, double(H)})
    for (double s : shifted(big, 0.0, 1.0)) CHECK(s == 0.0);
  // At exactly y = -1 the sample is 0 (torchvision returns 0 on the border of the support).
  const std::vector<double> edge = shifted(-1.0, 0.0, 1.0);
  for (int64_t xx = 0; xx < W; ++xx) CHECK(edge[size_t(xx)] == 0.0);
}

TEST_CASE("deform_conv2d: the plan form of the kernel equals the direct per-element form") {
  // deform_point's coefficients applied to a plane must give deform_bilinear and
  // deform_coordinate_weight (torchvision's per-element functions), at fractional points, on
  // the integer grid, at y = -1 and x = -1 exactly, at the far borders and outside.
  const int64_t H = 4, W = 3;
  std::vector<double> plane;
  for (int64_t i = 0; i < H * W; ++i) plane.push_back(std::sin(1.0 + 0.7 * double(i)) * 3.0);
  std::vector<double> coords = {-2.5, -1.0, -0.999, -0.5, -1e-9, 0.0, 0.25, 1.0, 1.5, 2.0, 2.75, 3.0, 3.5, 4.0, 5.0};
  int checked = 0;
  for (double y : coords)
    for (double x : coords) {
      const kernels::DeformPoint<double> pt = kernels::deform_point<double>(H, W, y, x);
      const double val = kernels::deform_apply(plane.data(), pt.idx, pt.value);
      const double dy = kernels::deform_apply(plane.data(), pt.idx, pt.dy);
      const double dx = kernels::deform_apply(plane.data(), pt.idx, pt.dx);
      CHECK(val == doctest::Approx(kernels::deform_bilinear(plane.data(), H, W, y, x)).epsilon(1e-14));
      CHECK(val == doctest::Approx(ref_sample(plane, 0, H, W, y, x)).epsilon(1e-14));
      CHECK(dy == doctest::Approx(kernels::deform_coordinate_weight(plane.data(), H, W, y, x, true)).epsilon(1e-14));
      CHECK(dx == doctest::Approx(kernels::deform_coordinate_weight(plane.data(), H, W, y, x, false)).epsilon(1e-14));
      for (int q = 0; q < 4; ++q) CHECK((pt.idx[q] >= 0 && pt.idx[q] < H * W));
      ++checked;
    }
  CHECK(checked == int(coords.size() * coords.size()));
  // Away from the grid the derivatives are the slopes of the sample: one-sided differences.
  for (double y : {-0.5, 0.3, 2.6})
    for (double x : {-0.25, 1.4}) {
      const double h = 1e-7;
      const double fy = (ref_sample(plane, 0, H, W, y + h, x) - ref_sample(plane, 0, H, W, y - h, x)) / (2 * h);
      const double fx = (ref_sample(plane, 0, H, W, y, x + h) - ref_sample(plane, 0, H, W, y, x - h)) / (2 * h);
      CHECK(kernels::deform_coordinate_weight(plane.data(), H, W, y, x, true) == doctest::Approx(fy).epsilon(1e-6));
      CHECK(kernels::deform_coordinate_weight(plane.data(), H, W, y, x, false) == doctest::Approx(fx).epsilon(1e-6));
    }
  // y = -1 exactly: value 0, but the derivative is the slope from above (x0 row: v(0, x)).
  const double d_edge = kernels::deform_coordinate_weight(plane.data(), H, W, -1.0, 1.0, true);
  CHECK(d_edge == doctest::Approx(plane[1]));
}

// ---- Backward -------------------------------------------------------------------------------

TEST_CASE("deform_conv2d: gradcheck (f64) of x, offset, weight, bias and mask") {
  Case c;
  SUBCASE("basic with mask and bias") {}
  SUBCASE("no mask, no bias") { c.mask = false, c.bias = false; }
  SUBCASE("stride 2") { c.p = Conv2dParams::make(2, 1); }
  SUBCASE("dilation 2") { c.p = Conv2dParams::make(1, 2, 2); }
  SUBCASE("offset groups 2") { c.G = 2; }
  SUBCASE("weight groups 2") { c.p.groups = 2; }
  SUBCASE("weight groups 2, offset groups 2, stride 2, asymmetric kernel") {
    c.G = 2, c.p.groups = 2, c.kw = 2, c.H = 6;
    c.p = {2, 1, 1, 0, 1, 2, 2};
  }
  SUBCASE("Aurora batch folding, B = 3") {
    c.N = 1, c.Cin = 6, c.Cout = 9, c.G = 3, c.p.groups = 3, c.bias = false;
  }
  Inputs in = make_inputs(c, 11);
  for (Tensor* t : {&in.x, &in.offset, &in.weight, &in.bias, &in.mask})
    if (t->defined()) t->requires_grad_();
  const Conv2dParams p = c.p;
  const std::string err = gradcheck(
      [p](const TensorList& v) { return deform_conv2d(v[0], v[1], v[2], v[3], v[4], p); }, in.list());
  CHECK_MESSAGE(err.empty(), err);
}

TEST_CASE("deform_conv2d: gradcheck with non-contiguous inputs") {
  // x as a transposed view, offset and mask as channel slices, weight as a permuted view.
  Generator gen(5);
  const int64_t N = 2, C = 4, O = 3, H = 5, W = 4;
  Tensor xt = randn({N, C, W, H}, gen, opts(DType::f64)).requires_grad_();
  Tensor off_big = fractional_offsets({N, 18 + 3, H, W}, gen).requires_grad_();
  Tensor mask_big = rand({N, 9 + 4, H, W}, gen, opts(DType::f64)).requires_grad_();
  Tensor w_perm = randn({C, O, 3, 3}, gen, opts(DType::f64)).requires_grad_();
  const Conv2dParams p = Conv2dParams::make(1, 1);
  auto f = [p](const TensorList& v) {
    Tensor x = transpose(v[0], 2, 3), off = narrow(v[1], 1, 3, 18), m = narrow(v[2], 1, 2, 9);
    Tensor w = permute(v[3], {1, 0, 2, 3});
    CHECK(!x.is_contiguous());
    CHECK(!off.is_contiguous());
    CHECK(!w.is_contiguous());
    return deform_conv2d(x, off, w, Tensor(), m, p);
  };
  const std::string err = gradcheck(f, {xt, off_big, mask_big, w_perm});
  CHECK_MESSAGE(err.empty(), err);
  // The same values through contiguous copies give the same output.
  NoGradGuard no_grad;
  Tensor y1 = f({xt, off_big, mask_big, w_perm});
  Tensor y2 = deform_conv2d(contiguous(transpose(xt, 2, 3)), contiguous(narrow(off_big, 1, 3, 18)),
                            contiguous(permute(w_perm, {1, 0, 2, 3})), Tensor(),
                            contiguous(narrow(mask_big, 1, 2, 9)), p);
  CHECK(max_abs_diff(y1.to_vector(), y2.to_vector()) == 0.0);
}

TEST_CASE("deform_conv2d: far offsets give zero output and zero offset gradients there") {
  Case c;
  Inputs in = make_inputs(c, 13);
  {
    NoGradGuard no_grad;
    in.offset = add(in.offset, 40.0);  // every sampling point lands beyond the bottom-right corner
  }
  for (Tensor* t : {&in.x, &in.offset, &in.weight, &in.mask}) t->requires_grad_();
  Tensor y = run(in, c.p);
  Generator gen(1);
  Tensor g = randn(y.sizes(), gen, opts(DType::f64));
  TensorList gr = grad({y}, {in.x, in.offset, in.weight, in.mask}, {g});
  // out = bias everywhere; all other gradients vanish.
  const std::vector<double> yv = y.to_vector(), bv = in.bias.to_vector();
  for (size_t i = 0; i < yv.size(); ++i) CHECK(yv[i] == bv[(i / size_t(c.Ho() * c.Wo())) % size_t(c.Cout)]);
  for (const Tensor& t : gr) CHECK(max_abs(t.to_vector()) == 0.0);
}

TEST_CASE("deform_conv2d: gradients requested separately equal those requested together") {
  // needs_input_grad skips work per input; each gradient alone must not change.
  Case c;
  c.G = 2, c.p.groups = 2;
  Inputs in = make_inputs(c, 17);
  for (Tensor* t : {&in.x, &in.offset, &in.weight, &in.bias, &in.mask}) t->requires_grad_();
  Generator gen(2);
  Tensor y = run(in, c.p);
  Tensor g = randn(y.sizes(), gen, opts(DType::f64));
  const TensorList all = grad({y}, in.list(), {g}, false, false, true);
  const TensorList inputs = in.list();
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor yi = run(in, c.p);
    const TensorList one = grad({yi}, {inputs[i]}, {g});
    CHECK(max_abs_diff(one[0].to_vector(), all[i].to_vector()) == 0.0);
  }
  // Only one input requiring grad: the Node then saves neither x (for the input gradient alone)
  // nor the weight (for the weight or bias gradient alone), and must still give the same values.
  for (size_t i = 0; i < inputs.size(); ++i) {
    TensorList fresh;
    for (size_t k = 0; k < inputs.size(); ++k) fresh.push_back(k == i ? inputs[k].detach().requires_grad_() : inputs[k].detach());
    Tensor yi = deform_conv2d(fresh[0], fresh[1], fresh[2], fresh[3], fresh[4], c.p);
    const TensorList one = grad({yi}, {fresh[i]}, {g});
    CHECK(max_abs_diff(one[0].to_vector(), all[i].to_vector()) == 0.0);
  }
  // Under no-grad nothing is recorded.
  NoGradGuard no_grad;
  CHECK(!run(in, c.p).requires_grad());
}

TEST_CASE("deform_conv2d: double backward raises an error naming the op") {
  Case c;
  Inputs in = make_inputs(c, 19);
  in.x.requires_grad_();
  in.offset.requires_grad_();
  Tensor y = run(in, c.p);
  // First order works (create_graph = false).
  Tensor s = sum(mul(y, y));
  TensorList g1 = grad({s}, {in.x}, {}, false, false, true);
  CHECK(g1[0].defined());
  // Recording the backward for a second order (create_graph = true) is refused.
  CHECK_THROWS_WITH_AS(grad({s}, {in.x, in.offset}, {}, /*create_graph=*/true),
                       doctest::Contains("DeformConv2dBackward is differentiable only once"), Error);
}

TEST_CASE("deform_conv2d: results do not depend on the number of threads") {
  // Large enough for every OpenMP loop to run in parallel.
  Case c;
  c.N = 2, c.Cin = 3 * 16, c.Cout = 3 * 8, c.H = c.W = 24, c.G = 3, c.p.groups = 3;
  const Inputs base = make_inputs(c, 23, DType::f32);
  auto run_all = [&](int threads) {
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    Inputs in = base;
    for (Tensor* t : {&in.x, &in.offset, &in.weight, &in.bias, &in.mask}) *t = t->detach().requires_grad_();
    Tensor y = run(in, c.p);
    Generator gen(3);
    Tensor g = randn(y.sizes(), gen);
    TensorList gr = grad({y}, in.list(), {g});
    gr.push_back(y);
    omp_set_num_threads(before);
    return gr;
  };
  const TensorList one = run_all(1), four = run_all(4);
  for (size_t i = 0; i < one.size(); ++i) CHECK(max_abs_diff(one[i].to_vector(), four[i].to_vector()) == 0.0);
}

// ---- Parity with torchvision ----------------------------------------------------------------

namespace {

// |ours - want| <= rtol |want| + atol * max|want| elementwise; returns the worst ratio of the error
// to that bound (<= 1 passes) and reports it.
double parity_ratio(const std::string& what, const Tensor& ours, const Tensor& want, double rtol, double atol) {
  REQUIRE_MESSAGE(ours.defined(), what);
  REQUIRE_MESSAGE(ours.sizes() == want.sizes(), what << ": shape " << ours.sizes().str() << " vs " << want.sizes().str());
  const std::vector<double> a = ours.to_vector(), b = want.to_vector();
  const double scale = max_abs(b);
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double bound = rtol * std::abs(b[i]) + atol * scale;
    const double e = std::abs(a[i] - b[i]);
    worst = std::max(worst, bound > 0 ? e / bound : (e > 0 ? 1e30 : 0.0));
  }
  return worst;
}

}  // namespace

TEST_CASE("deform_conv2d: parity with torchvision.ops.deform_conv2d (forward and all gradients)") {
  // Tolerances, f32 against torchvision's f64 result on the same (f32) inputs:
  //   |ours - ref| <= 1e-4 |ref| + 2e-6 max|ref|   per element (forward and every gradient).
  // torchvision's own f32 result meets the same bound (reported below). In f64 we agree with
  // torchvision to 1e-12 (relative to max|ref|): same sampling rule, same border convention.
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("engine_ref_deform_" + std::to_string(::getpid()) + ".safetensors")).string();
  const std::string cmd = std::string(ENGINE_PYTHON " " ENGINE_SOURCE_DIR "/tests/parity/ref_deform.py ") + path;
  const int rc = std::system(cmd.c_str());
  REQUIRE_MESSAGE(rc == 0, "the torchvision reference failed: `" << cmd << "` exited with " << rc
                               << "; ENGINE_PYTHON (" ENGINE_PYTHON ") needs python3-torch and python3-torchvision");
  const io::SafetensorsFile file = io::read_safetensors(path);
  std::filesystem::remove(path);
  REQUIRE(file.metadata.count("cases"));
  std::vector<std::string> cases;
  {
    std::stringstream ss(file.metadata.at("cases"));
    for (std::string name; std::getline(ss, name, ',');) cases.push_back(name);
  }
  REQUIRE(cases.size() == 10);
  double worst_ours = 0, worst_tv = 0;
  for (const std::string& name : cases) {
    CAPTURE(name);
    auto get = [&](const std::string& k) { return file.contains(name + "." + k) ? file.at(name + "." + k) : Tensor(); };
    const std::vector<double> pv = get("params").to_vector();
    REQUIRE(pv.size() == 7);
    const Conv2dParams p{int64_t(pv[0]), int64_t(pv[1]), int64_t(pv[2]), int64_t(pv[3]),
                         int64_t(pv[4]), int64_t(pv[5]), int64_t(pv[6])};
    const char* keys[5] = {"x", "offset", "weight", "bias", "mask"};
    for (DType dt : {DType::f32, DType::f64}) {
      TensorList in;
      for (const char* k : keys) {
        Tensor t = get(k);
        in.push_back(t.defined() ? to_dtype(t, dt).detach().requires_grad_() : Tensor());
      }
      Tensor y = deform_conv2d(in[0], in[1], in[2], in[3], in[4], p);
      TensorList want_in;
      for (const Tensor& t : in)
        if (t.defined()) want_in.push_back(t);
      const TensorList gr = grad({y}, want_in, {to_dtype(get("grad_out"), dt)});
      std::vector<std::pair<std::string, Tensor>> ours = {{"out", y}};
      size_t gi = 0;
      for (size_t k = 0; k < 5; ++k)
        if (in[k].defined()) ours.emplace_back(std::string("d") + keys[k], gr[gi++]);
      for (const auto& [what, t] : ours) {
        const Tensor want = get(what);
        REQUIRE_MESSAGE(want.defined(), name << "." << what << " missing from the reference file");
        if (dt == DType::f32) {
          const double r = parity_ratio(what, t, want, 1e-4, 2e-6);
          const double r_tv = parity_ratio(what, get("tv32_" + what), want, 1e-4, 2e-6);
          worst_ours = std::max(worst_ours, r);
          worst_tv = std::max(worst_tv, r_tv);
          CHECK_MESSAGE(r <= 1.0, name << "." << what << " (f32): error " << r << " x the tolerance");
        } else {
          const double r = parity_ratio(what, t, want, 0.0, 1e-12);
          CHECK_MESSAGE(r <= 1.0, name << "." << what << " (f64): error " << r << " x the tolerance");
        }
      }
    }
  }
  // For the record: the worst f32 error as a fraction of the tolerance, ours and torchvision's.
  MESSAGE("worst f32 error / tolerance over all cases: ours " << worst_ours << ", torchvision " << worst_tv);
}

// ---- Errors ---------------------------------------------------------------------------------

TEST_CASE("deform_conv2d: errors name the op and the bad value") {
  const TensorOptions o = opts(DType::f64);
  Tensor x = zeros({2, 4, 5, 5}, o), w = zeros({6, 4, 3, 3}, o), off = zeros({2, 18, 5, 5}, o);
  Tensor m = zeros({2, 9, 5, 5}, o);
  const Conv2dParams p = Conv2dParams::make(1, 1);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, zeros({2, 17, 5, 5}, o), w, Tensor(), Tensor(), p),
                       doctest::Contains("offset has 17 channels, expected a positive multiple of 2*kh*kw = 18"), Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, zeros({2, 27, 5, 5}, o), w, Tensor(), Tensor(), p),
                       doctest::Contains("offset has 27 channels"), Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, off, w, Tensor(), zeros({2, 18, 5, 5}, o), p),
                       doctest::Contains("mask has 18 channels, expected offset_groups * kh * kw = 1 * 9 = 9"), Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, zeros({2, 36, 5, 5}, o), w, Tensor(), m, p),
                       doctest::Contains("mask has 9 channels, expected offset_groups * kh * kw = 2 * 9 = 18"), Error);
  Conv2dParams p3 = p;
  p3.groups = 3;
  CHECK_THROWS_WITH_AS(deform_conv2d(x, off, zeros({6, 1, 3, 3}, o), Tensor(), m, p3),
                       doctest::Contains("input channels 4 are not divisible by groups 3"), Error);
  Conv2dParams p2 = p;
  p2.groups = 2;
  CHECK_THROWS_WITH_AS(deform_conv2d(x, off, w, Tensor(), m, p2),
                       doctest::Contains("weight [6,4,3,3] has 4 input channels per group, but x has 4 channels in 2 groups"),
                       Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, off, zeros({5, 2, 3, 3}, o), Tensor(), m, p2),
                       doctest::Contains("output channels 5"), Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, zeros({2, 3 * 18, 5, 5}, o), w, Tensor(), Tensor(), p),
                       doctest::Contains("input channels 4 are not divisible by the 3 offset groups"), Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, zeros({1, 18, 5, 5}, o), w, Tensor(), Tensor(), p),
                       doctest::Contains("offset batch size 1 does not match x's 2"), Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, zeros({2, 18, 4, 5}, o), w, Tensor(), Tensor(), p),
                       doctest::Contains("offset has spatial size 4x5, expected the output size 5x5"), Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, off, w, Tensor(), zeros({2, 9, 5, 6}, o), p),
                       doctest::Contains("mask has spatial size 5x6"), Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, off, w, zeros({5}, o), m, p), doctest::Contains("expected bias of shape [6]"),
                       Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(zeros({4, 5, 5}, o), off, w, Tensor(), m, p),
                       doctest::Contains("deform_conv2d: expected x of shape [N, Cin, H, W]"), Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, to_dtype(off, DType::f32), w, Tensor(), m, p),
                       doctest::Contains("deform_conv2d: dtype mismatch"), Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, off, zeros({6, 4, 9, 9}, o), Tensor(), m, p),
                       doctest::Contains("does not fit"), Error);
  CHECK_THROWS_WITH_AS(deform_conv2d(x, off, w, Tensor(), m, Conv2dParams::make(0, 1)),
                       doctest::Contains("stride must be >= 1"), Error);
  CHECK_THROWS_WITH_AS(deform_conv2d_backward(zeros({2, 6, 4, 4}, o), x, off, w, m, p, {true, true, true, true, true}),
                       doctest::Contains("grad_out has shape [2,6,4,4], expected the output shape [2,6,5,5]"), Error);
}

TEST_CASE("deform_conv2d: an empty batch gives empty outputs and zero weight/bias gradients") {
  Case c;
  c.N = 0;
  Inputs in = make_inputs(c, 29);
  for (Tensor* t : {&in.x, &in.offset, &in.weight, &in.bias, &in.mask}) t->requires_grad_();
  Tensor y = run(in, c.p);
  CHECK(y.sizes() == Dims({0, c.Cout, c.Ho(), c.Wo()}));
  const TensorList gr = grad({y}, in.list(), {zeros(y.sizes(), opts(DType::f64))});
  CHECK(gr[0].sizes() == in.x.sizes());
  CHECK(gr[2].sizes() == in.weight.sizes());
  CHECK(max_abs(gr[2].to_vector()) == 0.0);
  CHECK(max_abs(gr[3].to_vector()) == 0.0);
}
