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

// act(v) * gain, clamped; v = x + b (or x without a bias), added by the caller. The activation
// and the clamp are template arguments so that a CPU loop over the functor has no branch on them
// and vectorises; alpha, gain and clamp are held in T, as the unfused ops round them.
template <typename T, int Act, bool Clamp>
struct BiasActFn {
  T alpha, gain, clamp;
  // Branch-free (max / min select instructions; signs of a layer's inputs are random, so a branch
  // would mispredict half the time). lrelu as max(v, 0) + alpha min(v, 0) rounds exactly as
  // v > 0 ? v : alpha v: one of the two terms is an exact zero.
  ENGINE_HD T operator()(T v) const {
    if (Act == 1) v = max_of(v, T(0));
    if (Act == 2) v = max_of(v, T(0)) + min_of(v, T(0)) * alpha;
    v = v * gain;
    if (Clamp) v = min_of(max_of(v, -clamp), clamp);
    return v;
  }
};

// gy's share of dL/dx given the forward output y. Linear in gy (Note [bias_act double backward]).
template <typename T, int Act, bool Clamp>
struct BiasActGradFn {
  T alpha, gain, clamp;
  // gy gain times a selected slope (1, alpha or 0): a select of constants, no branch.
  ENGINE_HD T operator()(T gy, T y) const {
    T s = T(1);
    if (Act == 1) s = y > T(0) ? T(1) : T(0);
    if (Act == 2) s = y > T(0) ? T(1) : alpha;
    if (Clamp) s = (y < clamp && y > -clamp) ? s : T(0);
    return gy * gain * s;
  }
};

// Calls f(functor) with the BiasActFn (Grad = false) or BiasActGradFn (Grad = true) of p (host
// side: picks the instantiation the CPU loop or the CUDA kernel runs).
template <typename T, bool Grad, typename F>
inline void with_bias_act_fn(const BiasActParams& p, F&& f) {
  const T a = T(p.alpha), g = T(p.gain), c = T(p.clamp);
  const bool cl = p.clamp >= 0;
  if constexpr (Grad) {
    if (p.act == 0) cl ? f(BiasActGradFn<T, 0, true>{a, g, c}) : f(BiasActGradFn<T, 0, false>{a, g, c});
    else if (p.act == 1) cl ? f(BiasActGradFn<T, 1, true>{a, g, c}) : f(BiasActGradFn<T, 1, false>{a, g, c});
    else cl ? f(BiasActGradFn<T, 2, true>{a, g, c}) : f(BiasActGradFn<T, 2, false>{a, g, c});
  } else {
    if (p.act == 0) cl ? f(BiasActFn<T, 0, true>{a, g, c}) : f(BiasActFn<T, 0, false>{a, g, c});
    else if (p.act == 1) cl ? f(BiasActFn<T, 1, true>{a, g, c}) : f(BiasActFn<T, 1, false>{a, g, c});
    else cl ? f(BiasActFn<T, 2, true>{a, g, c}) : f(BiasActFn<T, 2, false>{a, g, c});
  }
}

}  // namespace engine::kernels
