// norm.h: recorder for layer_norm and group_norm (formulas in norm.cpp).
#pragma once
#include "tensor/tensor.h"

namespace engine::autograd::formulas {

// Both ops normalise rows viewed as x4 = [A, G, Cg, HW] over dims {2, 3}, with per-channel
// affine parameters w, b viewed as [1, G, Cg, 1]:
//   layer_norm: A = leading elements, G = 1, Cg = prod(normalized_shape), HW = 1
//   group_norm: A = N, G = num_groups, Cg = C / G, HW = prod(spatial sizes)
struct NormGeometry {
  int64_t a = 1, groups = 1, cg = 1, hw = 1;
  double eps = 1e-5;
  bool layer = true;  // layer_norm (column sums for dw/db) or group_norm (per-channel sums)
  int64_t rows() const { return a * groups; }
  int64_t row_size() const { return cg * hw; }
};

// x: the contiguous input; w, b: contiguous or undefined; y: the output; mean, rstd: f64 [rows]
// statistics of the forward (used by the fused first-order backward).
void norm(const char* name, const NormGeometry& geo, const Tensor& x, const Tensor& w, const Tensor& b,
          const Tensor& y, const Tensor& mean, const Tensor& rstd);

}  // namespace engine::autograd::formulas
