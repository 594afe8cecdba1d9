// Tests of the modulated transformation module (nn/mtm.h; docs/aurora-spec.md section 4).
//  - At initialisation (sigma = beta = 0: offsets 0, mask 1) a ModulatedConv2d with MTM attached
//    equals the same ModulatedConv2d without it (same seed: MTM's parameters are registered last,
//    so the host's initial values are identical), to 1e-6 in f32.
//  - gradcheck (f64, B = 2, C = 3, 5x5) of the host conv with MTM w.r.t. x, w and every parameter,
//    with sigma and beta set non-zero so offsets and mask are generic (fractional offsets: the
//    bilinear sampling is smooth there; a kink would need a sample exactly on a grid line).
//  - Offsets/mask layout: offsets = o[:, :18], mask = 2 sigmoid(o[:, 18:]); names and counts.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/gradcheck.h"
#include "autograd/grad_mode.h"
#include "nn/mtm.h"
#include "tensor/ops.h"

using namespace engine;
using namespace engine::nn;

namespace {
ModConvConfig host_config(int64_t cin, int64_t cout, int64_t w_dim, int64_t n) {
  ModConvConfig c;
  c.in_channels = cin, c.out_channels = cout, c.w_dim = w_dim, c.num_kernels = n;
  c.kernel_size = 3, c.demodulate = true, c.activation = Activation::lrelu;
  return c;
}
}  // namespace

TEST_CASE("MTM at initialisation equals the plain modulated conv (offsets 0, mask 1)") {
  for (int64_t n : {1, 2}) {
    ModulatedConv2d a(host_config(4, 5, 6, n)), b(host_config(4, 5, 6, n));
    MTM& mtm = b.attach_mtm<MTM>(4, 6);
    ParameterStore sa, sb;
    sa.materialize(a, 11);
    sb.materialize(b, 11);
    Generator g(3);
    const Tensor x = randn({2, 4, 6, 7}, g), w = randn({2, 6}, g);
    autograd::NoGradGuard ng;
    const auto [off, mask] = mtm.offsets_and_mask(x, w);
    CHECK(off.sizes() == Dims{2, 18, 6, 7});
    CHECK(mask.sizes() == Dims{2, 9, 6, 7});
    for (double v : off.to_vector()) CHECK(v == 0.0);
    for (double v : mask.to_vector()) CHECK(v == doctest::Approx(1.0).epsilon(1e-7));
    const auto ya = a.forward(x, w).to_vector(), yb = b.forward(x, w).to_vector();
    REQUIRE(ya.size() == yb.size());
    double md = 0;
    for (size_t i = 0; i < ya.size(); ++i) md = std::max(md, std::abs(ya[i] - yb[i]));
    MESSAGE("N = " << n << ": max |mtm - plain| = " << md);
    CHECK(md <= 1e-6);
  }
}

TEST_CASE("MTM names, parameter count, layout of offsets and mask") {
  ModulatedConv2d m(host_config(3, 2, 4, 1));
  MTM& mtm = m.attach_mtm<MTM>(3, 4);
  std::vector<std::string> names;
  for (auto& [nm, p] : m.named_parameters()) names.push_back(nm);
  CHECK(names == std::vector<std::string>{"weight", "bias", "style.weight", "style.bias", "mtm.out_scale", "mtm.out_bias",
                                          "mtm.offset_conv.weight", "mtm.offset_conv.style.weight",
                                          "mtm.offset_conv.style.bias"});
  CHECK(mtm.num_parameters() == 27 * 3 * 9 + 4 * 3 + 3 + 54);
  ParameterStore s;
  s.materialize(m, 2, TensorOptions{DType::f64, Device::cpu(), memory::Kind::param});
  Generator g(5);
  autograd::NoGradGuard ng;
  copy_(mtm.out_scale.value, randn({1, 27, 1, 1}, g, opts(DType::f64)));
  copy_(mtm.out_bias.value, randn({1, 27, 1, 1}, g, opts(DType::f64)));
  const Tensor x = randn({2, 3, 4, 4}, g, opts(DType::f64)), w = randn({2, 4}, g, opts(DType::f64));
  const auto o = add(mul(mtm.offset_conv.forward(x, w), mtm.out_scale.value), mtm.out_bias.value).to_vector();
  const auto [off, mask] = mtm.offsets_and_mask(x, w);
  const auto ov = off.to_vector(), mv = mask.to_vector();
  // o [2, 27, 4, 4]: offsets are channels 0..17, mask logits 18..26, per sample.
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t c = 0; c < 27; ++c)
      for (int64_t p = 0; p < 16; ++p) {
        const double v = o[size_t((b * 27 + c) * 16 + p)];
        if (c < 18)
          CHECK(ov[size_t((b * 18 + c) * 16 + p)] == v);
        else
          CHECK(mv[size_t((b * 9 + c - 18) * 16 + p)] == doctest::Approx(2.0 / (1.0 + std::exp(-v))));
      }
}

TEST_CASE("MTM gradcheck (f64, B = 2, C = 3, 5x5) with sigma, beta non-zero") {
  for (int64_t n : {1, 2}) {
    ModulatedConv2d m(host_config(3, 2, 4, n));
    MTM& mtm = m.attach_mtm<MTM>(3, 4);
    ParameterStore s;
    s.materialize(m, 7, TensorOptions{DType::f64, Device::cpu(), memory::Kind::param});
    Generator g(8);
    // Offsets of order 0.3 px and a generic mask.
    {
      autograd::NoGradGuard ng;
      copy_(mtm.out_scale.value, mul(randn({1, 27, 1, 1}, g, opts(DType::f64)), 0.3));
      copy_(mtm.out_bias.value, mul(randn({1, 27, 1, 1}, g, opts(DType::f64)), 0.3));
    }
    TensorList in = {randn({2, 3, 5, 5}, g, opts(DType::f64)).requires_grad_(true),
                     randn({2, 4}, g, opts(DType::f64)).requires_grad_(true)};
    for (auto& [nm, p] : s.parameters()) in.push_back(p->value);
    ModulatedConv2d* mp = &m;
    const std::string err = autograd::gradcheck([mp](const TensorList& i) { return mp->forward(i[0], i[1]); }, in);
    CHECK_MESSAGE(err.empty(), err);
  }
}

TEST_CASE("MTM errors") {
  CHECK_THROWS_AS(MTM(0, 4), Error);
  CHECK_THROWS_AS(MTM(3, 4, 2), Error);
  ModConvConfig c = host_config(3, 2, 4, 1);
  c.upsample = true;
  CHECK_THROWS_AS(ModulatedConv2d(c).attach_mtm<MTM>(3, 4), Error);
}
