// bias_act.h: the portable bodies of the fused bias + activation + gain + clamp op (StyleGAN2's
// bias_act, Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN", code
// torch_utils/ops/bias_act.py) and of its gradient.
//
//   forward:  y  = clamp(act(x + b[c]) * gain, -clamp, clamp)       (clamp < 0: no clamp)
//   gradient: gx = gy * gain * act'(y)   and 0 where |y| >= clamp    (b's gradient: sum of gx)
//
// act is linear, relu or lrelu(alpha) with alpha >= 0 and gain > 0, so the sign of y is the sign of
// act(x + b): the derivative mask can be read from the saved output y instead of x + b, and the
// input need not be kept. y == 0 takes the slope side (alpha for lrelu, 0 for relu), as PyTorch's
// leaky_relu at x == 0. The arithmetic is the unfused expression's, rounding for rounding
// (add in T, the activation in T, the gain in T), so fusing changes no result.
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

struct BiasActParams {
  int act;       // 0 linear, 1 relu, 2 lrelu (the order of engine::BiasActKind)
  double alpha;  // lrelu slope
  double gain;
  double clamp;  // < 0: none
};

// act(v) * gain, clamped; v = x + b (or x without a bias), added by the caller.
template <typename T>
ENGINE_HD T bias_act_apply(T v, const BiasActParams& p) {
  if (p.act == 1) v = v > T(0) ? v : T(0);
  else if (p.act == 2) v = v > T(0) ? v : v * T(p.alpha);
  v = v * T(p.gain);
  if (p.clamp >= 0) v = v > T(p.clamp) ? T(p.clamp) : (v < T(-p.clamp) ? T(-p.clamp) : v);
  return v;
}

// gy's share of dL/dx given the forward output y. Linear in gy (Note [bias_act double backward]).
template <typename T>
ENGINE_HD T bias_act_grad_value(T gy, T y, const BiasActParams& p) {
  if (p.clamp >= 0 && !(y < T(p.clamp) && y > T(-p.clamp))) return T(0);
  const T g = gy * T(p.gain);
  if (p.act == 1) return y > T(0) ? g : T(0);
  if (p.act == 2) return y > T(0) ? g : g * T(p.alpha);
  return g;
}

}  // namespace engine::kernels
