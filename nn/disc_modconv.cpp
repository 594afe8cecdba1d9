// disc_modconv.cpp: 1x1 modulated conv, StyleGAN2's non-fused form (see disc_modconv.h).
#include "nn/disc_modconv.h"

#include <cmath>

#include "tensor/memory/profiler.h"

namespace engine::nn {

DiscModulatedConv1x1::DiscModulatedConv1x1(int64_t in, int64_t out, int64_t cond_dim, bool demod, Activation act,
                                           double eps)
    : Module("DiscModulatedConv1x1"),
      in_channels(in),
      out_channels(out),
      demodulate(demod),
      activation(act),
      demod_eps(eps),
      weight_gain(1.0 / std::sqrt(double(in))),
      style(register_module<EqualLinear>("style", cond_dim, in, /*bias=*/true, /*bias_init=*/1.0)),
      weight(register_parameter("weight", {out, in, 1, 1}, Init::normal())),
      bias(register_parameter("bias", {out}, Init::zeros(), 1.0, /*weight_decay=*/false)) {}

Tensor DiscModulatedConv1x1::forward(const Tensor& x, const Tensor& c) const {
  ENGINE_CHECK(x.dim() == 4 && x.size(1) == in_channels, "DiscModulatedConv1x1: expected x [N, {}, H, W], got {}",
               in_channels, x.sizes().str());
  ENGINE_CHECK(c.dim() == 2 && c.size(0) > 0 && x.size(0) % c.size(0) == 0,
               "DiscModulatedConv1x1: x has {} rows, not a multiple of the {} rows of c {}", x.size(0),
               c.dim() == 2 ? c.size(0) : -1, c.sizes().str());
  const int64_t n = x.size(0), b = c.size(0), p = n / b, h = x.size(2), w = x.size(3);
  const Tensor s = style.forward(c);  // [B, C_in]
  // Modulate the input channels: x viewed [P, B, C_in, H*W] times s [1, B, C_in, 1].
  Tensor xs = mul(reshape(x, {p, b, in_channels, h * w}), reshape(s, {1, b, in_channels, 1}));
  const Tensor wt = mul(weight.value, weight_gain);  // [C_out, C_in, 1, 1]
  Tensor y = conv2d(reshape(xs, {n, in_channels, h, w}), wt);
  if (demodulate) {
    // d [B, C_out] = rsqrt(s^2 (W^2)^T + eps), applied to the output channels.
    const Tensor w2 = square(reshape(wt, {out_channels, in_channels}));
    const Tensor d = rsqrt(add(matmul(square(s), transpose(w2, 0, 1)), demod_eps));
    y = reshape(mul(reshape(y, {p, b, out_channels, h * w}), reshape(d, {1, b, out_channels, 1})),
                {n, out_channels, h, w});
  }
  return bias_act(y, bias.value, 1.0, activation);
}

}  // namespace engine::nn
