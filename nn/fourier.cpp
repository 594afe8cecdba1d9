// fourier.cpp: StyleGAN3-style Fourier-feature input; the math is in fourier.h (spec section 2).
#include "nn/fourier.h"

#include <cmath>
#include <string>
#include <vector>

#include "tensor/ops.h"

namespace engine::nn {

namespace {
const FourierConfig& checked(const FourierConfig& c) {
  ENGINE_CHECK(c.w_dim > 0 && c.channels > 0 && c.size > 0 && c.sampling_rate > 0 && c.bandwidth > 0,
               "FourierFeatures: w_dim ({}), channels ({}), size ({}), sampling_rate ({}), bandwidth ({}) must be "
               "positive",
               c.w_dim, c.channels, c.size, c.sampling_rate, c.bandwidth);
  return c;
}

// f = n / (|n| exp(|n|^2)^(1/4)) * bandwidth, computed in f64.
Init freqs_init(double bandwidth) {
  return Init::custom([bandwidth](const Dims& shape, Generator& gen) {
    const Tensor n = randn(shape, gen, opts(DType::f64));
    const Tensor r2 = sum(square(n), {1}, true);
    return mul(div(n, mul(sqrt(r2), exp(mul(r2, 0.25)))), bandwidth);
  });
}

Init phases_init() {
  return Init::custom([](const Dims& shape, Generator& gen) { return sub(rand(shape, gen, opts(DType::f64)), 0.5); });
}

Init eye3_init() {
  return Init::custom([](const Dims& shape, Generator&) {
    return from_vector({1, 0, 0, 0, 1, 0, 0, 0, 1}, shape, opts(DType::f64));
  });
}
}  // namespace

FourierFeatures::FourierFeatures(const FourierConfig& c)
    : Module("FourierFeatures"),
      config(checked(c)),
      weight(register_parameter("weight", {c.channels, c.channels}, Init::normal(1.0))),
      affine(register_module<EqualLinear>("affine", c.w_dim, 4, true, 0.0, 1.0)),
      transform(register_buffer("transform", {3, 3}, eye3_init())),
      freqs(register_buffer("freqs", {c.channels, 2}, freqs_init(c.bandwidth))),
      phases(register_buffer("phases", {c.channels}, phases_init())) {
  // The affine starts as the identity transform: weight 0, bias (1, 0, 0, 0).
  affine.weight.init = Init::zeros();
  affine.bias->init = Init::custom([](const Dims& shape, Generator&) {
    return from_vector({1, 0, 0, 0}, shape, opts(DType::f64));
  });
}

Tensor FourierFeatures::forward(const Tensor& w) const {
  const FourierConfig& c = config;
  ENGINE_CHECK(w.defined() && w.dim() == 2 && w.size(1) == c.w_dim, "FourierFeatures: expected w [B, {}], got {}",
               c.w_dim, w.defined() ? w.sizes().str() : std::string("undefined"));
  const int64_t B = w.size(0), C = c.channels, S = c.size;
  const TensorOptions o = opts(w.dtype(), w.device());

  // (r_c, r_s, t_x, t_y), normalised by the length of the rotation part.
  Tensor t = affine.forward(w);                                          // [B, 4]
  t = div(t, sqrt(sum(square(narrow(t, 1, 0, 2)), {1}, true)));          // [B, 4]
  const Tensor rc = select(t, 1, 0), rs = select(t, 1, 1), tx = select(t, 1, 2), ty = select(t, 1, 3);
  // The first two rows of M_r M_t = [[rc, -rs, -rc tx + rs ty], [rs, rc, -rs tx - rc ty]], then @ T.
  const Tensor row0 = stack({rc, neg(rs), sub(mul(rs, ty), mul(rc, tx))}, 1);       // [B, 3]
  const Tensor row1 = stack({rs, rc, neg(add(mul(rs, tx), mul(rc, ty)))}, 1);       // [B, 3]
  const Tensor m = matmul(stack({row0, row1}, 1), transform.value.to(w.dtype()));  // [B, 2, 3]
  const Tensor f = freqs.value.to(w.dtype());                                       // [C, 2]
  const Tensor ph = add(unsqueeze(phases.value.to(w.dtype()), 0),
                        squeeze(matmul(f, narrow(m, 2, 2, 1)), 2));  // [C,2] x [B,2,1] -> [B, C]
  const Tensor fb = matmul(f, narrow(m, 2, 0, 2));                   // [B, C, 2]

  // Sampling grid [S*S, 2] (x, y) of pixel centres, row-major over (i = row, j = column).
  std::vector<double> g(size_t(S * S * 2));
  const double scale = 0.5 * double(S) / c.sampling_rate;
  for (int64_t i = 0; i < S; ++i)
    for (int64_t j = 0; j < S; ++j) {
      g[size_t((i * S + j) * 2 + 0)] = ((2.0 * double(j) + 1.0) / double(S) - 1.0) * scale;
      g[size_t((i * S + j) * 2 + 1)] = ((2.0 * double(i) + 1.0) / double(S) - 1.0) * scale;
    }
  const Tensor grid = from_vector(g, {S * S, 2}, o);

  // x^T [B, C, S*S] = freqs_b [B, C, 2] x grid^T [2, S*S] + phases; sin(2 pi .).
  Tensor x = add(matmul(fb, transpose(grid, 0, 1)), unsqueeze(ph, 2));
  x = sin(mul(x, 2.0 * M_PI));
  // Channel mixing: (weight / sqrt(C)) [C, C] x x [B, C, S*S].
  const Tensor y = matmul(mul(weight.value, 1.0 / std::sqrt(double(C))), x);
  return reshape(y, {B, C, S, S});
}

}  // namespace engine::nn
