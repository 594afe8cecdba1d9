// Convolution: conv2d, conv_transpose2d, conv2d_weight (Note [conv as three differentiable
// primitives]).
//  - conv2d values against a naive direct 7-loop convolution (in double, written here);
//  - conv_transpose2d as the adjoint of conv2d in x:  <conv2d(x, w), y> == <x, conv_transpose2d(y, w)>
//    and conv2d_weight as the adjoint in w:          <conv2d(x, w), y> == <w, conv2d_weight(x, y)>
//    (to 1e-10 relative in f64);
//  - gradcheck + gradgradcheck of all three with stride 2, padding, dilation, groups, bias, the
//    batch-grouped (modulated conv) layout and non-contiguous inputs;
//  - both CPU plans (small GEMMs in parallel, large ones sequential), the 1x1 direct-GEMM path,
//    the chunked weight gradient, thread-count independence, profiler-visible im2col buffers;
//  - errors for mismatched channels and shapes.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>

#include "autograd/engine.h"
#include "autograd/gradcheck.h"
#include "tensor/cpu/conv.h"
#include "tensor/kernels/im2col.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::autograd;

namespace {

Tensor rnd(const Dims& shape, uint64_t seed, DType t = DType::f64) {
  Generator gen(seed);
  return randn(shape, gen, opts(t));
}
Tensor leaf(const Dims& shape, uint64_t seed) { return rnd(shape, seed).requires_grad_(true); }

double dot(const Tensor& a, const Tensor& b) {
  REQUIRE(a.sizes() == b.sizes());
  const auto x = a.to_vector(), y = b.to_vector();
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

// Direct convolution: for every (n, o, oh, ow) the sum over the group's channels and the taps.
std::vector<double> naive_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) {
  const auto xv = x.to_vector(), wv = w.to_vector();
  const auto bv = b.defined() ? b.to_vector() : std::vector<double>();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), Cg = w.size(1), KH = w.size(2), KW = w.size(3), Og = O / p.groups;
  const int64_t HO = (H + 2 * p.pad_h - p.dilation_h * (KH - 1) - 1) / p.stride_h + 1;
  const int64_t WO = (W + 2 * p.pad_w - p.dilation_w * (KW - 1) - 1) / p.stride_w + 1;
  std::vector<double> y(size_t(N * O * HO * WO));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oh = 0; oh < HO; ++oh)
        for (int64_t ow = 0; ow < WO; ++ow) {
          double s = b.defined() ? bv[size_t(o)] : 0.0;
          const int64_t g = o / Og;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t i = 0; i < KH; ++i)
              for (int64_t j = 0; j < KW; ++j) {
                const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dilation_h;
                const int64_t iw = ow * p.stride_w - p.pad_w + j * p.dilation_w;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += wv[size_t(((o * Cg + c) * KH + i) * KW + j)] * xv[size_t(((n * C + g * Cg + c) * H + ih) * W + iw)];
              }
          y[size_t(((n * O + o) * HO + oh) * WO + ow)] = s;
        }
  return y;
}

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]) / (1.0 + std::abs(want[i])));
  CHECK(worst <= tol);
}

struct Case {
  const char* name;
  Dims x, w;
  Conv2dParams p;
};
Conv2dParams P(int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t g) {
  return {sh, sw, ph, pw, dh, dw, g};
}

// Geometries covering strides, asymmetric padding, dilation, groups, 1x1 (direct GEMM and not),
// odd sizes whose conv2d drops a remainder (so conv_transpose2d needs output_padding).
const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"3x3 pad 1", {2, 3, 6, 5}, {4, 3, 3, 3}, P(1, 1, 1, 1, 1, 1, 1)},
      {"stride 2 pad (1,0), odd size", {2, 3, 7, 8}, {4, 3, 3, 2}, P(2, 2, 1, 0, 1, 1, 1)},
      {"stride (2,3) dilation 2", {1, 2, 9, 10}, {3, 2, 2, 3}, P(2, 3, 1, 2, 2, 2, 1)},
      {"groups 2 stride 2 dilation (1,2)", {2, 4, 7, 7}, {6, 2, 3, 3}, P(2, 2, 1, 2, 1, 2, 2)},
      {"1x1 direct GEMM", {2, 4, 3, 5}, {6, 4, 1, 1}, P(1, 1, 0, 0, 1, 1, 1)},
      {"1x1 stride 2", {2, 4, 5, 5}, {3, 4, 1, 1}, P(2, 2, 0, 0, 1, 1, 1)},
      {"1x1 groups 2", {3, 4, 3, 3}, {4, 2, 1, 1}, P(1, 1, 0, 0, 1, 1, 2)},
      {"batch-grouped (modulated conv, N=3)", {1, 3 * 2, 5, 5}, {3 * 4, 2, 3, 3}, P(1, 1, 1, 1, 1, 1, 3)},
      {"depthwise", {2, 3, 6, 6}, {3, 1, 3, 3}, P(1, 1, 1, 1, 1, 1, 3)},
  };
  return c;
}

int64_t out_size(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d) { return (n + 2 * p - d * (k - 1) - 1) / s + 1; }
int64_t out_pad(int64_t n, int64_t o, int64_t k, int64_t s, int64_t p, int64_t d) {
  return n - ((o - 1) * s - 2 * p + d * (k - 1) + 1);
}

}  // namespace

TEST_CASE("conv2d matches a naive direct convolution") {
  uint64_t seed = 1;
  for (const Case& c : cases()) {
    CAPTURE(c.name);
    Tensor x = rnd(c.x, seed++), w = rnd(c.w, seed++), b = rnd({c.w[0]}, seed++);
    Tensor y = conv2d(x, w, b, c.p);
    CHECK(y.sizes() == Dims{c.x[0], c.w[0], out_size(c.x[2], c.w[2], c.p.stride_h, c.p.pad_h, c.p.dilation_h),
                            out_size(c.x[3], c.w[3], c.p.stride_w, c.p.pad_w, c.p.dilation_w)});
    check_close(y.to_vector(), naive_conv2d(x, w, b, c.p), 1e-12);
    check_close(conv2d(x, w, Tensor(), c.p).to_vector(), naive_conv2d(x, w, Tensor(), c.p), 1e-12);
  }
}

TEST_CASE("conv2d in f32 on both CPU plans and on non-contiguous inputs") {
  // Small GEMMs (8 x 256 x 27 per sample): samples in parallel; large ones (64 x 256 x 576):
  // one after another on BLAS's threads. Both against the f64 naive reference.
  struct F32Case {
    Dims x, w;
    Conv2dParams p;
  };
  const F32Case fc[] = {{{16, 3, 16, 16}, {8, 3, 3, 3}, Conv2dParams::make(1, 1)},
                        {{2, 64, 16, 16}, {64, 64, 3, 3}, Conv2dParams::make(1, 1)},
                        {{2, 32, 16, 16}, {48, 32, 1, 1}, Conv2dParams::make(1, 0)},
                        {{3, 8, 9, 9}, {8, 4, 3, 3}, Conv2dParams::make(2, 1, 1, 2)}};
  uint64_t seed = 100;
  for (const F32Case& c : fc) {
    Tensor x = rnd(c.x, seed++, DType::f32), w = rnd(c.w, seed++, DType::f32), b = rnd({c.w[0]}, seed++, DType::f32);
    check_close(conv2d(x, w, b, c.p).to_vector(), naive_conv2d(x, w, b, c.p), 2e-5);
  }
  // Non-contiguous input and weight (transposed views) give the contiguous result.
  Tensor xt = transpose(rnd({2, 6, 3, 5}, 120), 1, 2);  // [2, 3, 6, 5]
  Tensor wt = transpose(rnd({4, 3, 3, 3}, 121), 2, 3);
  CHECK_FALSE(xt.is_contiguous());
  check_close(conv2d(xt, wt, Tensor(), Conv2dParams::make(1, 1)).to_vector(),
              naive_conv2d(contiguous(xt), contiguous(wt), Tensor(), Conv2dParams::make(1, 1)), 1e-12);
}

TEST_CASE("per-element im2col / col2im kernels (the CUDA form) equal the CPU row loops bit for bit") {
  uint64_t seed = 150;
  for (const Case& c : cases()) {
    CAPTURE(c.name);
    kernels::ConvShape s;
    s.channels = c.w[1];
    s.height = c.x[2];
    s.width = c.x[3];
    s.kernel_h = c.w[2];
    s.kernel_w = c.w[3];
    s.stride_h = c.p.stride_h;
    s.stride_w = c.p.stride_w;
    s.pad_h = c.p.pad_h;
    s.pad_w = c.p.pad_w;
    s.dilation_h = c.p.dilation_h;
    s.dilation_w = c.p.dilation_w;
    s.out_h = kernels::conv_out_size(s.height, s.kernel_h, s.stride_h, s.pad_h, s.dilation_h);
    s.out_w = kernels::conv_out_size(s.width, s.kernel_w, s.stride_w, s.pad_w, s.dilation_w);
    const int64_t rows = s.channels * s.kernel_h * s.kernel_w, cols = s.out_h * s.out_w;
    const int64_t pixels = s.channels * s.height * s.width;
    const std::vector<double> xv = rnd({pixels}, seed++).to_vector(), cv = rnd({rows * cols}, seed++).to_vector();
    std::vector<double> col(size_t(rows * cols), -1.0), img(size_t(pixels), -1.0);
    cpu::im2col(xv.data(), s, col.data(), cols, false);
    cpu::col2im(cv.data(), cols, s, img.data(), false);
    bool same_col = true, same_img = true;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t q = 0; q < cols; ++q)
        same_col = same_col && col[size_t(r * cols + q)] == kernels::im2col_element(xv.data(), s, r, q);
    for (int64_t e = 0; e < pixels; ++e)
      same_img = same_img && img[size_t(e)] == kernels::col2im_element(cv.data(), cols, s, e);
    CHECK(same_col);
    CHECK(same_img);
  }
}

TEST_CASE("conv_transpose2d is the adjoint of conv2d in x, conv2d_weight its adjoint in w") {
  uint64_t seed = 200;
  for (const Case& c : cases()) {
    CAPTURE(c.name);
    const Conv2dParams& p = c.p;
    Tensor x = rnd(c.x, seed++), w = rnd(c.w, seed++);
    Tensor y0 = conv2d(x, w, Tensor(), p);
    Tensor y = rnd(y0.sizes(), seed++);
    const int64_t oph = out_pad(c.x[2], y.size(2), c.w[2], p.stride_h, p.pad_h, p.dilation_h);
    const int64_t opw = out_pad(c.x[3], y.size(3), c.w[3], p.stride_w, p.pad_w, p.dilation_w);
    Tensor xt = conv_transpose2d(y, w, Tensor(), p, oph, opw);
    REQUIRE(xt.sizes() == x.sizes());
    const double lhs = dot(y0, y);
    CHECK(std::abs(lhs - dot(x, xt)) <= 1e-10 * (1.0 + std::abs(lhs)));
    Tensor gw = conv2d_weight(x, y, c.w[2], c.w[3], p);
    REQUIRE(gw.sizes() == w.sizes());
    CHECK(std::abs(lhs - dot(w, gw)) <= 1e-10 * (1.0 + std::abs(lhs)));
  }
}

TEST_CASE("conv_transpose2d bias, output sizes and output_padding") {
  // [1, 2, 3, 3] -> stride 2, k 3, pad 1: H = (3-1)*2 - 2 + 2 + op + 1 = 5 + op
  Tensor y = rnd({1, 2, 3, 3}, 300), w = rnd({2, 3, 3, 3}, 301), b = from_vector({0.5, -1.0, 2.0}, {3}, opts(DType::f64));
  const Conv2dParams p = Conv2dParams::make(2, 1);
  CHECK(conv_transpose2d(y, w, Tensor(), p).sizes() == Dims{1, 3, 5, 5});
  CHECK(conv_transpose2d(y, w, Tensor(), p, 1, 0).sizes() == Dims{1, 3, 6, 5});
  Tensor with = conv_transpose2d(y, w, b, p), without = conv_transpose2d(y, w, Tensor(), p);
  const auto d = sub(with, without).to_vector();
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t e = 0; e < 25; ++e) CHECK(d[size_t(c * 25 + e)] == doctest::Approx(b.to_vector()[size_t(c)]));
}

TEST_CASE("conv2d_weight sums over samples: chunked partial sums and large tiled GEMMs") {
  struct W {
    const char* name;
    Dims x, w;
    Conv2dParams p;
  };
  const W ws[] = {
      // 10 samples in 8 uneven chunks (1 or 2 samples each), 2 groups: 16 parallel tasks.
      {"chunks", {10, 4, 8, 8}, {6, 2, 3, 3}, Conv2dParams::make(1, 1, 1, 2)},
      {"chunks, 1x1", {10, 4, 5, 5}, {6, 4, 1, 1}, Conv2dParams::make(1, 0)},
      // Few large GEMMs (16 x 144 x 4096 per sample): samples in order, each GEMM tiled.
      {"tiled", {3, 16, 64, 64}, {16, 16, 3, 3}, Conv2dParams::make(1, 1)},
  };
  uint64_t seed = 400;
  for (const W& c : ws) {
    CAPTURE(c.name);
    Tensor x = rnd(c.x, seed++), w = rnd(c.w, seed++);
    Tensor y0 = conv2d(x, w, Tensor(), c.p);
    Tensor y = rnd(y0.sizes(), seed++);
    Tensor gw = conv2d_weight(x, y, c.w[2], c.w[3], c.p);
    const double lhs = dot(y0, y);
    CHECK(std::abs(lhs - dot(w, gw)) <= 1e-10 * (1.0 + std::abs(lhs)));
    // The sum over samples equals the sum of the per-sample weight gradients.
    Tensor per = zeros(w.sizes(), opts(DType::f64));
    for (int64_t n = 0; n < c.x[0]; ++n)
      per = add(per, conv2d_weight(narrow(x, 0, n, 1), narrow(y, 0, n, 1), c.w[2], c.w[3], c.p));
    check_close(gw.to_vector(), per.to_vector(), 1e-11);
  }
}

TEST_CASE("large images: column blocks of output rows in all three primitives") {
  // The column matrix is cut into blocks of output rows of at most 256 KB: [8, 8, 40, 40] with
  // 3x3 (f64) gives 4 blocks; the strided, dilated, grouped case 3 blocks of uneven content.
  // Forward against the naive convolution; input and weight gradients through the adjoint
  // identities (they use the same blocks, so a block-boundary error cannot cancel out).
  struct B {
    const char* name;
    Dims x, w;
    Conv2dParams p;
  };
  const B bs[] = {
      {"3x3 same", {8, 8, 40, 40}, {4, 8, 3, 3}, Conv2dParams::make(1, 1)},
      {"stride (2,1), dilation (2,1), groups 2", {8, 32, 45, 37}, {5 * 2, 16, 3, 2}, P(2, 1, 1, 0, 2, 1, 2)},
  };
  uint64_t seed = 450;
  for (const B& c : bs) {
    CAPTURE(c.name);
    Tensor x = rnd(c.x, seed++), w = rnd(c.w, seed++), b = rnd({c.w[0]}, seed++);
    Tensor y0 = conv2d(x, w, b, c.p);
    check_close(y0.to_vector(), naive_conv2d(x, w, b, c.p), 1e-12);
    y0 = conv2d(x, w, Tensor(), c.p);
    Tensor y = rnd(y0.sizes(), seed++);
    const int64_t oph = out_pad(c.x[2], y.size(2), c.w[2], c.p.stride_h, c.p.pad_h, c.p.dilation_h);
    const int64_t opw = out_pad(c.x[3], y.size(3), c.w[3], c.p.stride_w, c.p.pad_w, c.p.dilation_w);
    const double lhs = dot(y0, y);
    CHECK(std::abs(lhs - dot(x, conv_transpose2d(y, w, Tensor(), c.p, oph, opw))) <= 1e-10 * (1.0 + std::abs(lhs)));
    CHECK(std::abs(lhs - dot(w, conv2d_weight(x, y, c.w[2], c.w[3], c.p))) <= 1e-10 * (1.0 + std::abs(lhs)));
  }
}

TEST_CASE("results do not depend on the number of OpenMP threads") {
  Tensor x = rnd({8, 6, 12, 12}, 500, DType::f32), w = rnd({10, 3, 3, 3}, 501, DType::f32);
  const Conv2dParams p = Conv2dParams::make(1, 1, 1, 2);
  const int before = omp_get_max_threads();
  std::vector<double> ref[3];
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    Tensor y = conv2d(x, w, Tensor(), p);
    Tensor gx = conv_transpose2d(y, w, Tensor(), p);
    Tensor gw = conv2d_weight(x, y, 3, 3, p);
    if (threads == 1) {
      ref[0] = y.to_vector();
      ref[1] = gx.to_vector();
      ref[2] = gw.to_vector();
    } else {
      CHECK(y.to_vector() == ref[0]);
      CHECK(gx.to_vector() == ref[1]);
      CHECK(gw.to_vector() == ref[2]);
    }
  }
  omp_set_num_threads(before);
}

TEST_CASE("gradcheck and gradgradcheck of conv2d") {
  struct G {
    const char* name;
    Dims x, w;
    Conv2dParams p;
  };
  const G gs[] = {
      {"stride 2, padding 1", {2, 2, 5, 5}, {3, 2, 3, 3}, Conv2dParams::make(2, 1)},
      {"dilation 2, padding (0,1)", {1, 2, 6, 5}, {2, 2, 2, 3}, P(1, 1, 0, 1, 2, 2, 1)},
      {"groups 2", {2, 4, 4, 4}, {4, 2, 3, 3}, Conv2dParams::make(1, 1, 1, 2)},
      {"batch-grouped (N=2 as groups)", {1, 4, 4, 4}, {6, 2, 3, 3}, Conv2dParams::make(1, 1, 1, 2)},
      {"1x1 direct", {2, 3, 3, 3}, {2, 3, 1, 1}, Conv2dParams::make(1, 0)},
  };
  uint64_t seed = 600;
  for (const G& c : gs) {
    CAPTURE(c.name);
    TensorList in = {leaf(c.x, seed++), leaf(c.w, seed++), leaf({c.w[0]}, seed++)};
    const Conv2dParams p = c.p;
    auto f = [p](const TensorList& v) { return conv2d(v[0], v[1], v[2], p); };
    CHECK(gradcheck(f, in) == "");
    CHECK(gradgradcheck(f, in) == "");
  }
  // Non-contiguous input: a transposed view of the leaf reaches conv2d.
  TensorList in = {leaf({2, 4, 2, 4}, 650), leaf({2, 2, 3, 3}, 651)};
  auto f = [](const TensorList& v) { return conv2d(transpose(v[0], 1, 2), v[1], Tensor(), Conv2dParams::make(2, 1)); };
  CHECK(gradcheck(f, in) == "");
  CHECK(gradgradcheck(f, in) == "");
}

TEST_CASE("gradcheck and gradgradcheck of conv_transpose2d and conv2d_weight") {
  struct G {
    const char* name;
    Dims x, w;
    Conv2dParams p;
  };
  const G gs[] = {
      {"stride 2, padding 1, odd size", {2, 2, 6, 5}, {3, 2, 3, 3}, Conv2dParams::make(2, 1)},
      {"dilation 2, groups 2", {1, 4, 6, 6}, {4, 2, 2, 2}, P(1, 1, 1, 1, 2, 2, 2)},
      {"batch-grouped (N=2 as groups)", {1, 4, 4, 4}, {6, 2, 3, 3}, Conv2dParams::make(1, 1, 1, 2)},
  };
  uint64_t seed = 700;
  for (const G& c : gs) {
    CAPTURE(c.name);
    const Conv2dParams p = c.p;
    const int64_t ho = out_size(c.x[2], c.w[2], p.stride_h, p.pad_h, p.dilation_h);
    const int64_t wo = out_size(c.x[3], c.w[3], p.stride_w, p.pad_w, p.dilation_w);
    const int64_t oph = out_pad(c.x[2], ho, c.w[2], p.stride_h, p.pad_h, p.dilation_h);
    const int64_t opw = out_pad(c.x[3], wo, c.w[3], p.stride_w, p.pad_w, p.dilation_w);
    const int64_t kh = c.w[2], kw = c.w[3];
    const Dims ys{c.x[0], c.w[0], ho, wo};
    // conv_transpose2d(y, w, b): bias over the x channels
    TensorList tin = {leaf(ys, seed++), leaf(c.w, seed++), leaf({c.x[1]}, seed++)};
    auto ft = [=](const TensorList& v) { return conv_transpose2d(v[0], v[1], v[2], p, oph, opw); };
    CHECK(gradcheck(ft, tin) == "");
    CHECK(gradgradcheck(ft, tin) == "");
    // conv2d_weight(x, gy)
    TensorList win = {leaf(c.x, seed++), leaf(ys, seed++)};
    auto fw = [=](const TensorList& v) { return conv2d_weight(v[0], v[1], kh, kw, p); };
    CHECK(gradcheck(fw, win) == "");
    CHECK(gradgradcheck(fw, win) == "");
  }
  // Non-contiguous gy for conv2d_weight.
  TensorList win = {leaf({1, 2, 5, 5}, 750), leaf({1, 5, 3, 5}, 751)};
  auto fw = [](const TensorList& v) { return conv2d_weight(v[0], transpose(v[1], 1, 2), 3, 3, Conv2dParams::make(1, 1)); };
  CHECK(gradcheck(fw, win) == "");
  CHECK(gradgradcheck(fw, win) == "");
}

TEST_CASE("R1 through a modulated conv: double backward reaches the styles and the weight") {
  // StyleGAN2's modulated conv: w_n = w * s_n (per sample and input channel), as one grouped conv.
  // g = d sum(y) / dx with create_graph, r1 = sum(g^2): gradients of r1 w.r.t. the weight and the
  // styles exist and match central differences (gradcheck of the whole R1 function).
  const int64_t N = 2, C = 2, O = 3;
  TensorList in = {leaf({N, C, 4, 4}, 800), leaf({O, C, 3, 3}, 801), leaf({N, C}, 802)};
  auto r1 = [=](const TensorList& v) {
    // gradcheck evaluates under NoGradGuard for its finite differences; the inner grad() needs a
    // graph either way, and records one for the outer backward only when grad mode was on.
    const bool differentiable = grad_enabled();
    GradModeGuard on(true);
    Tensor x = v[0].detach().requires_grad_(true);
    Tensor wn = mul(unsqueeze(v[1], 0), reshape(v[2], {N, 1, C, 1, 1}));  // [N, O, C, 3, 3]
    Tensor y = conv2d(reshape(x, {1, N * C, 4, 4}), reshape(wn, {N * O, C, 3, 3}), Tensor(),
                      Conv2dParams::make(1, 1, 1, N));
    Tensor g = grad({sum(mul(y, y))}, {x}, {}, /*create_graph=*/differentiable)[0];
    GradModeGuard mode(differentiable);
    return sum(mul(g, g));
  };
  TensorList params = {in[0].detach(), in[1], in[2]};
  CHECK(gradcheck(r1, params) == "");
}

TEST_CASE("grad() w.r.t. the input computes no weight gradient (pruned), backward() does") {
  // Note [R1 double backward]: the first R1 pass asks for d/dx only; the conv node must not run
  // conv2d_weight for its weight (the engine marks that input as pruned).
  Tensor x = leaf({2, 3, 6, 6}, 850), w = leaf({4, 3, 3, 3}, 851), b = leaf({4}, 852);
  auto count_ops = [](const char* name) {
    int k = 0;
    for (const auto& r : memory::Profiler::records()) k += r.op == name;
    return k;
  };
  memory::Profiler::enable(true);
  memory::Profiler::reset();
  Tensor y = conv2d(x, w, b, Conv2dParams::make(1, 1));
  TensorList g = grad({sum(y)}, {x}, {}, /*create_graph=*/true);
  const int weight_calls_grad = count_ops("conv2d_weight"), input_calls_grad = count_ops("conv_transpose2d");
  backward(sum(mul(g[0], g[0])));  // reaches w through ConvTranspose2dBackward: conv2d_weight runs
  const int weight_calls_backward = count_ops("conv2d_weight");
  memory::Profiler::enable(false);
  CHECK(input_calls_grad == 1);
  CHECK(weight_calls_grad == 0);
  CHECK(weight_calls_backward == 1);
  CHECK(w.grad().defined());
  CHECK_FALSE(b.grad().defined());  // r1 does not depend on the bias
}

TEST_CASE("im2col buffers are charged to the op as transient bytes") {
  memory::Profiler::enable(true);
  memory::Profiler::reset();
  Tensor x = rnd({1, 4, 16, 16}, 900, DType::f32), w = rnd({8, 4, 3, 3}, 901, DType::f32);
  Tensor y = conv2d(x, w, Tensor(), Conv2dParams::make(1, 1));
  Tensor y1 = conv2d(x, rnd({8, 4, 1, 1}, 902, DType::f32), Tensor(), Conv2dParams::make(1, 0));
  memory::Profiler::enable(false);
  std::vector<int64_t> transient;
  for (const auto& r : memory::Profiler::records())
    if (r.op == "conv2d") transient.push_back(r.transient);
  REQUIRE(transient.size() == 2);
  CHECK(transient[0] >= int64_t(4 * 9 * 16 * 16 * sizeof(float)));  // one column matrix
  CHECK(transient[1] == 0);                                           // 1x1: no im2col at all
}

TEST_CASE("convolution ops reject bad shapes with clear messages") {
  Tensor x = rnd({2, 4, 6, 6}, 1000), w = rnd({3, 4, 3, 3}, 1001);
  CHECK_THROWS_WITH_AS(conv2d(x, rnd({3, 5, 3, 3}, 1002)),
                       doctest::Contains("weight [3,5,3,3] expects 5 input channels (5 per group x 1 groups), got 4"),
                       Error);
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor(), Conv2dParams::make(1, 0, 1, 3)),
                       doctest::Contains("4 input channels are not divisible by groups = 3"), Error);
  CHECK_THROWS_WITH_AS(conv2d(x, rnd({3, 2, 3, 3}, 1003), Tensor(), Conv2dParams::make(1, 0, 1, 2)),
                       doctest::Contains("3 output channels (weight [3,2,3,3]) are not divisible by groups = 2"), Error);
  CHECK_THROWS_WITH_AS(conv2d(x, w, rnd({4}, 1004)), doctest::Contains("bias shape [4] does not match 3 channels"),
                       Error);
  CHECK_THROWS_WITH_AS(conv2d(x, rnd({3, 4, 7, 7}, 1005)), doctest::Contains("larger than the padded input 6x6"),
                       Error);
  CHECK_THROWS_WITH_AS(conv2d(rnd({4, 6, 6}, 1006), w), doctest::Contains("conv2d: input must be 4-D, got shape [4,6,6]"),
                       Error);
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor(), Conv2dParams::make(0, 1)), doctest::Contains("stride must be >= 1"),
                       Error);
  CHECK_THROWS_WITH_AS(conv2d(x, rnd({3, 4, 3, 3}, 1007, DType::f32)), doctest::Contains("dtype mismatch"), Error);
  CHECK_THROWS_WITH_AS(conv_transpose2d(rnd({2, 5, 4, 4}, 1008), w, Tensor(), Conv2dParams::make(1, 1)),
                       doctest::Contains("input [2,5,4,4] has 5 channels but weight [3,4,3,3] has 3"), Error);
  CHECK_THROWS_WITH_AS(conv_transpose2d(rnd({2, 3, 4, 4}, 1009), w, Tensor(), Conv2dParams::make(2, 1), 2, 0),
                       doctest::Contains("output_padding (2, 0) must be >= 0 and below the stride (2, 2)"), Error);
  CHECK_THROWS_WITH_AS(conv2d_weight(x, rnd({2, 3, 5, 5}, 1010), 3, 3, Conv2dParams::make(1, 1)),
                       doctest::Contains("expected spatial size 6x6"), Error);
  CHECK_THROWS_WITH_AS(conv2d_weight(x, rnd({3, 3, 6, 6}, 1011), 3, 3, Conv2dParams::make(1, 1)),
                       doctest::Contains("batch sizes differ"), Error);
}
