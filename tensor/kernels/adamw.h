// adamw.h: the portable body of one AdamW element update (Loshchilov & Hutter, "Decoupled Weight
// Decay Regularization", Algorithm 2), shared by the CPU loop and the CUDA kernel of nn::AdamW
// over the flat parameter, gradient and moment buffers (DESIGN.md section 5).
//
// With the per-segment constants computed once per step on the host,
//   decay     = 1 - lr * wd  (1 for parameters without weight decay)
//   step_size = lr / (1 - b1^t),   inv_c2 = 1 / (1 - b2^t),
// the update of element i is, in double precision whatever the storage type:
//   m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
//   p <- p decay - step_size m / (sqrt(v inv_c2) + eps)
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

struct AdamWStep {
  double b1, b2, eps;
  double decay, step_size, inv_c2;
};

template <typename T>
ENGINE_HD void adamw_update(T& p, T g, T& m, T& v, const AdamWStep& s) {
  const double gi = double(g);
  const double mi = s.b1 * double(m) + (1 - s.b1) * gi;
  const double vi = s.b2 * double(v) + (1 - s.b2) * gi * gi;
  m = T(mi);
  v = T(vi);
  p = T(double(p) * s.decay - s.step_size * mi / (::sqrt(vi * s.inv_c2) + s.eps));
}

}  // namespace engine::kernels
