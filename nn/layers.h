// layers.h: equalized-learning-rate linear and conv layers (Karras et al., "Progressive Growing of
// GANs", section 4.1; StyleGAN2 appendix B).
//
// Note [equalized lr]: a weight is stored as N(0, 1/lr_mul) and scaled at run time by
//   weight_gain = lr_mul / sqrt(fan_in),
// so every layer sees unit-variance weights whatever its fan-in, and a learning-rate multiplier
// lr_mul slows a layer down (the mapping network uses 0.01) without changing its initial function.
// A bias is stored as init / lr_mul and scaled by lr_mul, so its effective initial value is `init`.
#pragma once
#include <string>

#include "nn/module.h"
#include "tensor/ops.h"

namespace engine::nn {

enum class Activation { linear, lrelu };  // lrelu: leaky_relu(0.2) * sqrt(2) (StyleGAN's gain)

// bias + activation: y = act(x + b * bias_gain) [* gain]. `b` broadcast over dim 1 of x.
// One fused op (engine::bias_act in tensor/ops_fused.cpp).
Tensor bias_act(const Tensor& x, const Tensor& b, double bias_gain, Activation act);
// The same with the bias (already scaled; may be undefined) broadcast along `dim` of x.
Tensor bias_act_along(const Tensor& x, const Tensor& b, int64_t dim, Activation act);

class EqualLinear : public Module {
 public:
  EqualLinear(int64_t in_features, int64_t out_features, bool bias = true, double bias_init = 0.0,
              double lr_mul = 1.0, Activation act = Activation::linear);
  Tensor forward(const Tensor& x) const;  // x [..., in] -> [..., out]

  int64_t in_features, out_features;
  double lr_mul, weight_gain;
  Activation activation;
  Parameter& weight;
  Parameter* bias = nullptr;
};

class EqualConv2d : public Module {
 public:
  EqualConv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, bool bias = true,
              int64_t stride = 1, int64_t padding = -1 /* -1: kernel_size / 2 */, double lr_mul = 1.0,
              Activation act = Activation::linear, double bias_init = 0.0);
  Tensor forward(const Tensor& x) const;

  int64_t in_channels, out_channels, kernel_size, stride, padding;
  double lr_mul, weight_gain;
  Activation activation;
  Parameter& weight;
  Parameter* bias = nullptr;
};

}  // namespace engine::nn
