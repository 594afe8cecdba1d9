// upfirdn2d: forward against a naive reference written here (explicit zero insertion, padding and
// cropping, direct convolution with the flipped filter, downsampling: the steps of StyleGAN2-ADA's
// _upfirdn2d_ref), a closed-form impulse response, the per-pixel kernel that CUDA will run, the
// adjoint identity of its backward, gradcheck / gradgradcheck, and error messages.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include <omp.h>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "tensor/kernels/upfirdn.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::autograd;

namespace {

// ---- Naive reference ------------------------------------------------------------------------
// x: [P, H, W] planes (row-major values); f2: the [kh, kw] 2-D filter, already including the
// gain. Each step materialises its full intermediate image, exactly as the reference does.
std::vector<double> naive_upfirdn(const std::vector<double>& x, int64_t P, int64_t H, int64_t W,
                                  const std::vector<double>& f2, int64_t kh, int64_t kw, const UpFirDnParams& p,
                                  int64_t& Ho, int64_t& Wo) {
  // 1. Upsample: pixel (y, x) goes to (y*up_y, x*up_x); the up-1 samples after it stay zero.
  const int64_t Hu = H * p.up_y, Wu = W * p.up_x;
  std::vector<double> u(size_t(P * Hu * Wu), 0.0);
  for (int64_t q = 0; q < P; ++q)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t c = 0; c < W; ++c) u[size_t((q * Hu + y * p.up_y) * Wu + c * p.up_x)] = x[size_t((q * H + y) * W + c)];
  // 2. Pad with the positive paddings, then crop with the negative ones.
  const int64_t top = std::max<int64_t>(p.pad_y0, 0), left = std::max<int64_t>(p.pad_x0, 0);
  const int64_t Hp = Hu + top + std::max<int64_t>(p.pad_y1, 0), Wp = Wu + left + std::max<int64_t>(p.pad_x1, 0);
  std::vector<double> padded(size_t(P * Hp * Wp), 0.0);
  for (int64_t q = 0; q < P; ++q)
    for (int64_t y = 0; y < Hu; ++y)
      for (int64_t c = 0; c < Wu; ++c) padded[size_t((q * Hp + y + top) * Wp + c + left)] = u[size_t((q * Hu + y) * Wu + c)];
  const int64_t y0 = std::max<int64_t>(-p.pad_y0, 0), x0 = std::max<int64_t>(-p.pad_x0, 0);
  const int64_t Hz = Hp - y0 - std::max<int64_t>(-p.pad_y1, 0), Wz = Wp - x0 - std::max<int64_t>(-p.pad_x1, 0);
  // 3. Convolve ("valid"): c[y][x] = sum_ij z[y+i][x+j] * f[kh-1-i][kw-1-j].
  const int64_t Hc = Hz - kh + 1, Wc = Wz - kw + 1;
  REQUIRE(Hc > 0);
  REQUIRE(Wc > 0);
  std::vector<double> conv(size_t(P * Hc * Wc), 0.0);
  for (int64_t q = 0; q < P; ++q)
    for (int64_t y = 0; y < Hc; ++y)
      for (int64_t c = 0; c < Wc; ++c) {
        double s = 0;
        for (int64_t i = 0; i < kh; ++i)
          for (int64_t j = 0; j < kw; ++j)
            s += padded[size_t((q * Hp + y0 + y + i) * Wp + x0 + c + j)] * f2[size_t((kh - 1 - i) * kw + (kw - 1 - j))];
        conv[size_t((q * Hc + y) * Wc + c)] = s;
      }
  // 4. Downsample: keep rows 0, down_y, 2 down_y, ... and likewise columns.
  Ho = (Hc + p.down_y - 1) / p.down_y;
  Wo = (Wc + p.down_x - 1) / p.down_x;
  std::vector<double> out(size_t(P * Ho * Wo));
  for (int64_t q = 0; q < P; ++q)
    for (int64_t y = 0; y < Ho; ++y)
      for (int64_t c = 0; c < Wo; ++c)
        out[size_t((q * Ho + y) * Wo + c)] = conv[size_t((q * Hc + y * p.down_y) * Wc + c * p.down_x)];
  return out;
}

// The 2-D filter the reference applies, gain included: f itself, or outer(f, f) for a 1-D f
// (each pass scaled by sqrt(gain): outer(f sqrt(g), f sqrt(g)) = g outer(f, f)).
std::vector<double> effective_filter(const Tensor& f, double gain, int64_t& kh, int64_t& kw) {
  const std::vector<double> v = f.to_vector();
  std::vector<double> f2;
  if (f.dim() == 2) {
    kh = f.size(0), kw = f.size(1);
    f2 = v;
  } else {
    kh = kw = f.size(0);
    for (double a : v)
      for (double b : v) f2.push_back(a * b);
  }
  for (double& e : f2) e *= gain;
  return f2;
}

// Compare upfirdn2d(x, f, p) with the naive reference, elementwise.
void check_against_naive(const Tensor& x, const Tensor& f, const UpFirDnParams& p, double tol) {
  int64_t kh, kw, Ho, Wo;
  const std::vector<double> f2 = effective_filter(f, p.gain, kh, kw);
  const std::vector<double> want =
      naive_upfirdn(x.to_vector(), x.size(0) * x.size(1), x.size(2), x.size(3), f2, kh, kw, p, Ho, Wo);
  Tensor y = upfirdn2d(x, f, p);
  REQUIRE(y.sizes() == Dims({x.size(0), x.size(1), Ho, Wo}));
  CHECK(y.dtype() == x.dtype());
  const std::vector<double> got = y.to_vector();
  double worst = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  CHECK(scale > 0);  // a non-trivial case
  CHECK(worst <= tol * std::max(scale, 1.0));
}

UpFirDnParams params(int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y, int64_t px0, int64_t px1,
                     int64_t py0, int64_t py1, double gain = 1.0) {
  UpFirDnParams p;
  p.up_x = up_x, p.up_y = up_y, p.down_x = down_x, p.down_y = down_y;
  p.pad_x0 = px0, p.pad_x1 = px1, p.pad_y0 = py0, p.pad_y1 = py1;
  p.gain = gain;
  return p;
}

// StyleGAN2's upsample2d(x, f, up): pad (fw+up-1)//2 before, (fw-up)//2 after, gain up^2.
UpFirDnParams upsample2d_params(int64_t fw, int64_t fh, int64_t up) {
  return params(up, up, 1, 1, (fw + up - 1) / 2, (fw - up) / 2, (fh + up - 1) / 2, (fh - up) / 2, double(up * up));
}
// StyleGAN2's downsample2d(x, f, down): pad (fw-down+1)//2 before, (fw-down)//2 after, gain 1.
UpFirDnParams downsample2d_params(int64_t fw, int64_t fh, int64_t down) {
  return params(1, 1, down, down, (fw - down + 1) / 2, (fw - down) / 2, (fh - down + 1) / 2, (fh - down) / 2);
}

// [1,3,3,1] normalised as StyleGAN2's setup_filter does: 1-D / 8, or outer(f, f) / 64.
Tensor binomial_1d(DType t = DType::f64) { return from_vector({1 / 8.0, 3 / 8.0, 3 / 8.0, 1 / 8.0}, {4}, opts(t)); }
Tensor binomial_2d(DType t = DType::f64) {
  const double b[4] = {1, 3, 3, 1};
  std::vector<double> v;
  for (double a : b)
    for (double c : b) v.push_back(a * c / 64.0);
  return from_vector(v, {4, 4}, opts(t));
}

// An asymmetric filter, so that a missing or doubled flip is visible; kh = 0 gives a 1-D [kw].
Tensor asym_filter(int64_t kh, int64_t kw) {
  std::vector<double> v;
  for (int64_t i = 0; i < std::max<int64_t>(kh, 1) * kw; ++i) v.push_back(0.3 + 0.7 * double(i) + 0.05 * double(i * i));
  return kh == 0 ? from_vector(v, {kw}, opts(DType::f64)) : from_vector(v, {kh, kw}, opts(DType::f64));
}

double dot(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_vector(), y = b.to_vector();
  REQUIRE(x.size() == y.size());
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

}  // namespace

TEST_CASE("upfirdn2d: impulse response is the (unflipped) filter times the gain: true convolution") {
  // x = a 3x3 impulse at the centre; pad 1 on each side; 2x2 filter f. Padded impulse at (2, 2);
  // out[y][x] = sum_ij z[y+i][x+j] f[1-i][1-j] = f[a][b] at (y, x) = (1+a, 1+b); zero elsewhere.
  Tensor x = from_vector({0, 0, 0, 0, 1, 0, 0, 0, 0}, {1, 1, 3, 3}, opts(DType::f64));
  Tensor f = from_vector({1, 2, 3, 4}, {2, 2}, opts(DType::f64));
  Tensor y = upfirdn2d(x, f, params(1, 1, 1, 1, 1, 1, 1, 1, 0.5));
  REQUIRE(y.sizes() == Dims({1, 1, 4, 4}));
  const std::vector<double> want = {0, 0, 0, 0,  //
                                    0, 0.5, 1, 0,  //
                                    0, 1.5, 2, 0,  //
                                    0, 0, 0, 0};
  CHECK(y.to_vector() == want);
  // Separable f = [1, 2]: outer = [[1,2],[2,4]], gain 4 -> [[4,8],[8,16]] at the same place.
  Tensor f1 = from_vector({1, 2}, {2}, opts(DType::f64));
  const std::vector<double> want1 = {0, 0, 0, 0, 0, 4, 8, 0, 0, 8, 16, 0, 0, 0, 0, 0};
  CHECK(upfirdn2d(x, f1, params(1, 1, 1, 1, 1, 1, 1, 1, 4.0)).to_vector() == want1);
}

TEST_CASE("upfirdn2d: up=2 zero insertion with a 1x1 filter places pixels at even positions") {
  // up 2, no pad, f = [[1]]: out has the pixels at (2y, 2x) and inserted zeros elsewhere;
  // the trailing inserted zeros are part of the upsampled image (size 2H x 2W).
  Tensor x = from_vector({1, 2, 3, 4}, {1, 1, 2, 2}, opts(DType::f64));
  Tensor f = from_vector({1}, {1, 1}, opts(DType::f64));
  Tensor y = upfirdn2d(x, f, params(2, 2, 1, 1, 0, 0, 0, 0));
  REQUIRE(y.sizes() == Dims({1, 1, 4, 4}));
  CHECK(y.to_vector() == std::vector<double>{1, 0, 2, 0, 0, 0, 0, 0, 3, 0, 4, 0, 0, 0, 0, 0});
  // down 2 of a 4x4 ramp keeps (0,0), (0,2), (2,0), (2,2)
  Tensor r = reshape(arange(16, opts(DType::f64)), {1, 1, 4, 4});
  CHECK(upfirdn2d(r, f, params(1, 1, 2, 2, 0, 0, 0, 0)).to_vector() == std::vector<double>{0, 2, 8, 10});
}

TEST_CASE("upfirdn2d: generator upsample (up=2, [1,3,3,1]) matches the naive reference") {
  Generator gen(11);
  Tensor x = randn({2, 3, 5, 4}, gen, opts(DType::f64));
  const UpFirDnParams p = upsample2d_params(4, 4, 2);
  CHECK(p.pad_x0 == 2);
  CHECK(p.pad_x1 == 1);
  CHECK(p.gain == 4.0);
  SUBCASE("2-D filter") { check_against_naive(x, binomial_2d(), p, 1e-13); }
  SUBCASE("1-D separable filter") { check_against_naive(x, binomial_1d(), p, 1e-13); }
  SUBCASE("1-D and 2-D agree and keep a constant image constant") {
    Tensor y1 = upfirdn2d(x, binomial_1d(), p), y2 = upfirdn2d(x, binomial_2d(), p);
    CHECK(y1.sizes() == Dims({2, 3, 10, 8}));
    const auto a = y1.to_vector(), b = y2.to_vector();
    for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-12));
    // With gain up^2 the filter keeps DC: interior pixels of a constant image stay constant.
    Tensor ones_img = full({1, 1, 6, 6}, 2.5, opts(DType::f64));
    Tensor yc = upfirdn2d(ones_img, binomial_1d(), p);
    CHECK(yc.to_vector()[size_t(5 * 12 + 6)] == doctest::Approx(2.5).epsilon(1e-14));
  }
  SUBCASE("f32") { check_against_naive(x.to(DType::f32), binomial_1d(DType::f32), p, 1e-6); }
  SUBCASE("f32 input with an f64 filter") { check_against_naive(x.to(DType::f32), binomial_2d(), p, 1e-6); }
}

TEST_CASE("upfirdn2d: discriminator downsample (down=2, [1,3,3,1]) matches the naive reference") {
  Generator gen(12);
  Tensor x = randn({2, 2, 8, 6}, gen, opts(DType::f64));
  const UpFirDnParams p = downsample2d_params(4, 4, 2);
  CHECK(upfirdn2d(x, binomial_1d(), p).sizes() == Dims({2, 2, 4, 3}));
  SUBCASE("2-D filter") { check_against_naive(x, binomial_2d(), p, 1e-13); }
  SUBCASE("1-D separable filter") { check_against_naive(x, binomial_1d(), p, 1e-13); }
  SUBCASE("odd size") { check_against_naive(randn({1, 2, 7, 9}, gen, opts(DType::f64)), binomial_1d(), p, 1e-13); }
  SUBCASE("f32") { check_against_naive(x.to(DType::f32), binomial_2d(DType::f32), p, 1e-6); }
}

TEST_CASE("upfirdn2d: pure filtering, negative padding, mixed factors, 1-D and 2-D") {
  Generator gen(13);
  Tensor x = randn({2, 2, 6, 7}, gen, opts(DType::f64));
  // filter2d: pad kw//2, (kw-1)//2, kh//2, (kh-1)//2 keeps the size
  SUBCASE("filter2d 3x2 asymmetric") {
    Tensor f = asym_filter(3, 2);
    check_against_naive(x, f, params(1, 1, 1, 1, 1, 0, 1, 1, 1.5), 1e-13);
    CHECK(upfirdn2d(x, f, params(1, 1, 1, 1, 1, 0, 1, 1)).sizes() == x.sizes());
  }
  SUBCASE("filter2d 1-D asymmetric") { check_against_naive(x, asym_filter(0, 3), params(1, 1, 1, 1, 1, 1, 1, 1, 2.0), 1e-13); }
  SUBCASE("negative padding crops (2-D)") {
    check_against_naive(x, asym_filter(2, 3), params(1, 1, 1, 1, -1, -2, -2, 1), 1e-13);
    check_against_naive(x, asym_filter(2, 3), params(2, 2, 1, 1, -3, 2, 1, -4), 1e-13);
  }
  SUBCASE("negative padding crops (1-D)") {
    check_against_naive(x, asym_filter(0, 3), params(2, 2, 1, 1, -3, -1, -2, -2), 1e-13);
    check_against_naive(x, asym_filter(0, 4), params(1, 1, 2, 2, -1, 0, 2, -3), 1e-13);
  }
  SUBCASE("crop past the whole image, then pad back (all zero but defined)") {
    UpFirDnParams p = params(1, 1, 1, 1, -9, 12, 0, 0);
    Tensor y = upfirdn2d(x, asym_filter(1, 2), p);
    CHECK(y.sizes() == Dims({2, 2, 6, 9}));
    const auto v = y.to_vector();
    CHECK(std::all_of(v.begin(), v.end(), [](double e) { return e == 0.0; }));
  }
  SUBCASE("different factors per axis, output sizes not divisible") {
    check_against_naive(x, asym_filter(2, 5), params(3, 1, 2, 3, 2, 1, 0, 3, 0.7), 1e-13);
    check_against_naive(x, asym_filter(0, 5), params(1, 2, 3, 2, 4, 0, 1, 2, 3.0), 1e-13);
    check_against_naive(x, asym_filter(3, 1), params(2, 3, 3, 2, 0, 1, 2, 2), 1e-13);
  }
  SUBCASE("up and down at once (fractional resampling)") {
    check_against_naive(x, asym_filter(4, 4), params(3, 3, 2, 2, 2, 1, 2, 1, 9.0), 1e-13);
    check_against_naive(x, asym_filter(0, 6), params(2, 2, 3, 3, 3, 2, 3, 2, 4.0), 1e-13);
  }
  SUBCASE("2-D outer-product filter (run as two 1-D passes), asymmetric and non-square") {
    // f = r c^T with r = [1, -2, 0.5] (rows, y) and c = [0.25, 3] (columns, x): a row/column
    // mix-up or a lost flip in the factorisation changes the result.
    Tensor f = from_vector({0.25, 3, -0.5, -6, 0.125, 1.5}, {3, 2}, opts(DType::f64));
    check_against_naive(x, f, params(2, 1, 1, 2, 1, 0, 2, -1, 3.0), 1e-13);
    check_against_naive(x, f, params(1, 3, 3, 1, -1, 2, 0, 2, -0.5), 1e-13);
    // the same with one entry off the outer product: the general 2-D path
    Tensor g = from_vector({0.25, 3, -0.5, -6, 0.125, 1.25}, {3, 2}, opts(DType::f64));
    check_against_naive(x, g, params(2, 1, 1, 2, 1, 0, 2, -1, 3.0), 1e-13);
  }
  SUBCASE("negative gain (1-D: sign on the y pass)") {
    check_against_naive(x, asym_filter(0, 3), params(1, 1, 1, 1, 1, 1, 1, 1, -2.0), 1e-13);
  }
  SUBCASE("non-contiguous input") {
    Tensor xt = transpose(randn({2, 2, 7, 6}, gen, opts(DType::f64)), 2, 3);
    REQUIRE_FALSE(xt.is_contiguous());
    check_against_naive(xt, asym_filter(3, 2), params(2, 2, 1, 1, 1, 1, 2, 0, 4.0), 1e-13);
    check_against_naive(xt, binomial_1d(), downsample2d_params(4, 4, 2), 1e-13);
  }
}

TEST_CASE("upfirdn2d: large inputs (the OpenMP path) match the reference and do not depend on threads") {
  Generator gen(19);
  Tensor x = randn({2, 16, 24, 20}, gen, opts(DType::f32));
  const UpFirDnParams up = upsample2d_params(4, 4, 2), down = downsample2d_params(4, 4, 2);
  check_against_naive(x, binomial_1d(DType::f32), up, 1e-6);
  check_against_naive(x, binomial_2d(DType::f32), down, 1e-6);
  check_against_naive(x, asym_filter(3, 3).to(DType::f32), params(2, 2, 1, 1, 1, 1, 1, 1, 4.0), 1e-6);
  const int threads = omp_get_max_threads();
  std::vector<std::vector<double>> runs;
  for (int t : {1, 2, 3}) {
    omp_set_num_threads(t);
    runs.push_back(upfirdn2d(x, binomial_1d(DType::f32), up).to_vector());
    runs.push_back(upfirdn2d(x, asym_filter(3, 3).to(DType::f32), up).to_vector());
  }
  omp_set_num_threads(threads);
  for (size_t r = 2; r < runs.size(); ++r) CHECK(runs[r] == runs[r % 2]);
}

TEST_CASE("upfirdn2d: the per-pixel kernel (what a CUDA thread runs) equals the CPU output bit for bit") {
  // The CPU's row form adds the same terms in the same order (tensor/kernels/upfirdn.h); a
  // non-outer-product filter keeps the op on the 2-D path.
  Generator gen(14);
  Tensor x = randn({2, 3, 5, 6}, gen, opts(DType::f32));
  Tensor f = asym_filter(3, 4).to(DType::f32);
  const UpFirDnParams p = params(2, 3, 3, 2, 2, -1, 1, 3, 2.0);
  Tensor y = upfirdn2d(x, f, p);
  kernels::UpFirDnGeometry g;
  g.H = 5, g.W = 6, g.Ho = y.size(2), g.Wo = y.size(3), g.kh = 3, g.kw = 4;
  g.up_x = p.up_x, g.up_y = p.up_y, g.down_x = p.down_x, g.down_y = p.down_y, g.pad_x0 = p.pad_x0, g.pad_y0 = p.pad_y0;
  const std::vector<double> fv = f.to_vector();
  std::vector<float> w;  // flipped, times gain
  for (size_t i = 0; i < fv.size(); ++i) w.push_back(float(fv[fv.size() - 1 - i] * p.gain));
  const float* xs = x.data<float>();
  const float* ys = y.data<float>();
  int64_t mismatches = 0;
  for (int64_t q = 0; q < 6; ++q)
    for (int64_t oy = 0; oy < g.Ho; ++oy)
      for (int64_t ox = 0; ox < g.Wo; ++ox)
        if (kernels::upfirdn_2d_at(xs + q * 30, w.data(), g, oy, ox) != ys[(q * g.Ho + oy) * g.Wo + ox]) ++mismatches;
  CHECK(mismatches == 0);
  // tap_range: o=0, L=3, up=2, down=1, pad0=2, 4 taps: s=-2; taps 2 (sample 0) only -> {2, 0, 1}
  const kernels::TapRange r = kernels::tap_range(0, 3, 2, 1, 2, 4);
  CHECK(r.first_tap == 2);
  CHECK(r.first_in == 0);
  CHECK(r.count == 1);
}

TEST_CASE("upfirdn2d: backward is the adjoint, <A x, y> == <x, A^T y>, in f64") {
  Generator gen(15);
  struct Case {
    Tensor f;
    UpFirDnParams p;
  };
  const std::vector<Case> cases = {
      {binomial_2d(), upsample2d_params(4, 4, 2)},
      {binomial_1d(), upsample2d_params(4, 4, 2)},
      {binomial_2d(), downsample2d_params(4, 4, 2)},
      {binomial_1d(), downsample2d_params(4, 4, 2)},
      {asym_filter(3, 2), params(1, 1, 1, 1, 1, 0, 1, 1, 1.5)},
      {asym_filter(2, 3), params(2, 2, 1, 1, -3, 2, 1, -4, 0.5)},
      {asym_filter(0, 3), params(2, 2, 1, 1, -3, -1, -2, -2)},
      {asym_filter(2, 5), params(3, 1, 2, 3, 2, 1, 0, 3, 0.7)},
      {asym_filter(0, 5), params(1, 2, 3, 2, 4, 0, 1, 2, 3.0)},
      {asym_filter(4, 4), params(3, 3, 2, 2, 2, 1, 2, 1, 9.0)},
      {asym_filter(0, 4), params(1, 1, 2, 2, -1, 0, 2, -3)},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    CAPTURE(k);
    Tensor x = randn({2, 2, 7, 6}, gen, opts(DType::f64)).requires_grad_(true);
    Tensor out = upfirdn2d(x, cases[k].f, cases[k].p);
    Tensor y = randn(out.sizes(), gen, opts(DType::f64));
    TensorList g = grad({out}, {x}, {y});
    REQUIRE(g[0].sizes() == x.sizes());
    const double lhs = dot(out, y), rhs = dot(x, g[0]);
    CHECK(std::abs(lhs) > 1e-3);
    CHECK(lhs == doctest::Approx(rhs).epsilon(1e-12));
  }
}

TEST_CASE("upfirdn2d: the backward of the backward is upfirdn2d with the original filter") {
  // h(v) = <A^T v, u> = <v, A u>, so dh/dv = A u = upfirdn2d(u, f, p).
  Generator gen(16);
  Tensor f = asym_filter(3, 2);
  const UpFirDnParams p = params(2, 1, 1, 2, 1, 2, 0, 1, 2.0);
  Tensor x = randn({1, 2, 5, 4}, gen, opts(DType::f64)).requires_grad_(true);
  Tensor out = upfirdn2d(x, f, p);
  Tensor v = randn(out.sizes(), gen, opts(DType::f64)).requires_grad_(true);
  Tensor u = randn(x.sizes(), gen, opts(DType::f64));
  TensorList g = grad({out}, {x}, {v}, /*create_graph=*/true);
  REQUIRE(g[0].requires_grad());
  REQUIRE(g[0].grad_fn() != nullptr);
  CHECK(g[0].grad_fn()->name() == "UpFirDn2dBackward");
  TensorList gv = grad({sum(mul(g[0], u))}, {v}, {}, /*create_graph=*/true);
  const std::vector<double> want = upfirdn2d(u, f, p).to_vector(), got = gv[0].to_vector();
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-12));
}

TEST_CASE("upfirdn2d: third-order gradient of sum(A(x)^3) matches the closed form") {
  // s = sum((A x)^3): grad s = 3 A^T (Ax)^2; d/dx <grad s, u1> = 6 A^T (Ax . A u1);
  // d/dx <that, u2> = 6 A^T (A u1 . A u2), independent of x. A^T y is taken as grad(<A z, y>, z).
  Generator gen(18);
  Tensor f = asym_filter(0, 3);
  const UpFirDnParams p = params(2, 2, 1, 1, 1, 1, 2, 0, 4.0);
  Tensor x = randn({1, 1, 4, 3}, gen, opts(DType::f64)).requires_grad_(true);
  Tensor u1 = randn(x.sizes(), gen, opts(DType::f64)), u2 = randn(x.sizes(), gen, opts(DType::f64));
  Tensor ax = upfirdn2d(x, f, p);
  Tensor s = sum(mul(mul(ax, ax), ax));
  Tensor g1 = grad({s}, {x}, {}, true)[0];
  Tensor g2 = grad({sum(mul(g1, u1))}, {x}, {}, true)[0];
  Tensor g3 = grad({sum(mul(g2, u2))}, {x})[0];
  Tensor prod = mul(upfirdn2d(u1, f, p), upfirdn2d(u2, f, p));
  Tensor z = zeros(x.sizes(), opts(DType::f64)).requires_grad_(true);
  Tensor adj = grad({sum(mul(upfirdn2d(z, f, p), prod))}, {z})[0];
  const std::vector<double> got = g3.to_vector(), want = adj.to_vector();
  double norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK(got[i] == doctest::Approx(6 * want[i]).epsilon(1e-10));
    norm += std::abs(want[i]);
  }
  CHECK(norm > 1e-3);
}

TEST_CASE("upfirdn2d: gradcheck and gradgradcheck (f64), non-contiguous inputs, 1-D and 2-D filters") {
  Generator gen(17);
  // x is stored [.., W, H] and transposed: a non-contiguous input.
  Tensor xs = randn({1, 2, 5, 4}, gen, opts(DType::f64)).requires_grad_(true);
  struct Case {
    Tensor f;
    UpFirDnParams p;
  };
  const std::vector<Case> cases = {
      {binomial_1d(), upsample2d_params(4, 4, 2)},
      {binomial_2d(), downsample2d_params(4, 4, 2)},
      {asym_filter(2, 3), params(2, 1, 1, 2, -1, 2, 1, 0, 1.5)},
      {asym_filter(0, 3), params(1, 2, 2, 1, 1, 1, -1, 2, 0.5)},
  };
  for (size_t k = 0; k < cases.size(); ++k) {
    CAPTURE(k);
    const Tensor f = cases[k].f;
    const UpFirDnParams p = cases[k].p;
    auto linear = [f, p](const TensorList& in) { return upfirdn2d(transpose(in[0], 2, 3), f, p); };
    // squared: the second derivative goes through upfirdn2d's backward and its backward
    auto squared = [f, p](const TensorList& in) {
      Tensor y = upfirdn2d(transpose(in[0], 2, 3), f, p);
      return mul(y, y);
    };
    CHECK(gradcheck(linear, {xs}) == "");
    CHECK(gradgradcheck(linear, {xs}) == "");
    CHECK(gradcheck(squared, {xs}) == "");
    CHECK(gradgradcheck(squared, {xs}) == "");
  }
}

TEST_CASE("upfirdn2d: errors name the op and the bad value") {
  Tensor x = zeros({1, 1, 4, 4}, opts(DType::f64));
  const UpFirDnParams p;
  CHECK_THROWS_WITH_AS(upfirdn2d(x, zeros({2, 2, 2}, opts(DType::f64)), p),
                       doctest::Contains("upfirdn2d: the filter must be 1-D [k] (separable) or 2-D [kh, kw], got a 3-D"),
                       Error);
  CHECK_THROWS_WITH_AS(upfirdn2d(x, scalar_tensor(1.0, opts(DType::f64)), p), doctest::Contains("got a 0-D filter"),
                       Error);
  CHECK_THROWS_WITH_AS(upfirdn2d(x, zeros({0}, opts(DType::f64)), p), doctest::Contains("filter is empty"), Error);
  // 4 + 0 - 5 < 0: output size 0
  CHECK_THROWS_WITH_AS(upfirdn2d(x, zeros({5, 5}, opts(DType::f64)), p), doctest::Contains("output size 0x0 <= 0"),
                       Error);
  // 4 + 0 - 5 = -1 with down 2: floor(-1/2) + 1 = 0 (truncating division would give 1)
  CHECK_THROWS_WITH_AS(upfirdn2d(x, zeros({5}, opts(DType::f64)), params(1, 1, 2, 2, 0, 0, 0, 0)),
                       doctest::Contains("output size 0x0 <= 0"), Error);
  // cropping more than the image
  CHECK_THROWS_WITH_AS(upfirdn2d(x, zeros({1, 1}, opts(DType::f64)), params(1, 1, 1, 1, -3, -2, 0, 0)),
                       doctest::Contains("output size 4x-1 <= 0"), Error);
  Tensor fg = zeros({2, 2}, opts(DType::f64)).requires_grad_(true);
  CHECK_THROWS_WITH_AS(upfirdn2d(x, fg, p), doctest::Contains("the filter is a constant"), Error);
  CHECK_THROWS_WITH_AS(upfirdn2d(zeros({4, 4}, opts(DType::f64)), zeros({2, 2}, opts(DType::f64)), p),
                       doctest::Contains("expected x of shape [N, C, H, W], got [4,4]"), Error);
  CHECK_THROWS_WITH_AS(upfirdn2d(x, zeros({2}, opts(DType::f64)), params(0, 1, 1, 1, 0, 0, 0, 0)),
                       doctest::Contains("up factors must be >= 1, got up_x=0"), Error);
  CHECK_THROWS_WITH_AS(upfirdn2d(x, zeros({2}, opts(DType::f64)), params(1, 1, 1, -2, 0, 0, 0, 0)),
                       doctest::Contains("down factors must be >= 1, got down_x=1 down_y=-2"), Error);
  CHECK_THROWS_WITH_AS(upfirdn2d(zeros({1, 1, 4, 4}, opts(DType::i64)), zeros({2}, opts(DType::f64)), p),
                       doctest::Contains("upfirdn2d: expected an f32 or f64 tensor"), Error);
}
