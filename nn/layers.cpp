// layers.cpp: equalized-learning-rate linear and conv layers. Note [equalized lr] in layers.h.
#include "nn/layers.h"

#include <cmath>

namespace engine::nn {

Tensor bias_act(const Tensor& x, const Tensor& b, double bias_gain, Activation act) {
  const Tensor bb = !b.defined() || bias_gain == 1.0 ? b : mul(b, bias_gain);
  return bias_act_along(x, bb, x.dim() == 1 ? 0 : 1, act);
}

Tensor bias_act_along(const Tensor& x, const Tensor& b, int64_t dim, Activation act) {
  // One fused pass (engine::bias_act, StyleGAN2's bias_act); linear without a bias is x itself.
  if (act == Activation::linear && !b.defined()) return x;
  return act == Activation::lrelu ? engine::bias_act(x, b, dim, BiasActKind::lrelu, 0.2, std::sqrt(2.0))
                                  : engine::bias_act(x, b, dim, BiasActKind::linear);
}

EqualLinear::EqualLinear(int64_t in, int64_t out, bool has_bias, double bias_init, double lr, Activation act)
    : Module("EqualLinear"),
      in_features(in),
      out_features(out),
      lr_mul(lr),
      weight_gain(lr / std::sqrt(double(in))),
      activation(act),
      weight(register_parameter("weight", {out, in}, Init::normal(1.0 / lr), lr)) {
  if (has_bias) bias = &register_parameter("bias", {out}, Init::constant(bias_init / lr), lr, false);
}

Tensor EqualLinear::forward(const Tensor& x) const {
  Tensor y = linear(x, mul(weight.value, weight_gain));
  return bias_act_along(y, bias ? mul(bias->value, lr_mul) : Tensor(), -1, activation);  // bias over the last dim
}

EqualConv2d::EqualConv2d(int64_t in, int64_t out, int64_t k, bool has_bias, int64_t s, int64_t pad, double lr,
                         Activation act, double bias_init)
    : Module("EqualConv2d"),
      in_channels(in),
      out_channels(out),
      kernel_size(k),
      stride(s),
      padding(pad < 0 ? k / 2 : pad),
      lr_mul(lr),
      weight_gain(lr / std::sqrt(double(in * k * k))),
      activation(act),
      weight(register_parameter("weight", {out, in, k, k}, Init::normal(1.0 / lr), lr)) {
  if (has_bias) bias = &register_parameter("bias", {out}, Init::constant(bias_init / lr), lr, false);
}

Tensor EqualConv2d::forward(const Tensor& x) const {
  Tensor y = conv2d(x, mul(weight.value, weight_gain), Tensor(), Conv2dParams::make(stride, padding));
  return bias_act(y, bias ? bias->value : Tensor(), lr_mul, activation);
}

}  // namespace engine::nn
