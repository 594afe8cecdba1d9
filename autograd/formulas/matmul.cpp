// matmul.cpp: backward formulas of matmul/bmm and linear, written with matmul, transpose,
// reshape and sum, so they are differentiable again (double backward).
//
// Precision (tensor/precision.h): each Node keeps the matmul precision in force when it was
// recorded and its backward GEMMs run under it, even when backward() runs outside the scope.
// Under bf16 the op recorded the Node on the bf16 copies of its operands, so those are what is
// saved (half the bytes of f32), and the backward matmuls of bf16 operands run in bf16 too.
//
//   matmul  c = a b   (a [.., n, k], b [.., k, m], batch dims broadcast):
//     da = sum_to(g b^T, a.shape)
//     db = sum_to(a^T g, b.shape)      when b is 2-D: db = A^T G with a, g folded to [rows, k], [rows, m]
//   linear  y = x W^T + bias   (x [.., in], W [out, in]):
//     dx    = g W
//     dW    = G^T X                     G = g as [rows, out], X = x as [rows, in]
//     dbias = sum over rows of G
// sum_to undoes broadcasting (the gradient of a broadcast operand is summed over the broadcast
// dims). The transposes are views: BLAS reads them with its transpose flag, nothing is copied.
#include "autograd/formulas/matmul.h"

#include "autograd/node.h"
#include "tensor/ops.h"
#include "tensor/precision.h"

namespace engine::autograd::formulas {

void matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  auto node = record("MatmulBackward", {a, b}, {out});
  if (!node) return;
  node->save(node->needs_input_grad(1) ? a : Tensor());
  node->save(node->needs_input_grad(0) ? b : Tensor());
  const Dims sa = a.sizes(), sb = b.sizes();
  const MatmulPrecision precision = matmul_precision();
  node->backward_fn = [sa, sb, precision](Node& n, const TensorList& g) -> TensorList {
    MatmulPrecisionScope scope(precision);
    Tensor da, db;
    if (n.needs_input_grad(0)) {
      const Tensor b = n.saved(1);
      da = sum_to(engine::matmul(g[0], transpose(b, -1, -2)), sa);
    }
    if (n.needs_input_grad(1)) {
      const Tensor a = n.saved(0);
      if (sb.size() == 2 && sa.size() > 2) {
        // b was shared by every batch entry: one GEMM over all rows instead of a batch then a sum.
        const int64_t k = sa[sa.size() - 1], m = sb[1];
        db = engine::matmul(transpose(reshape(a, {-1, k}), 0, 1), reshape(g[0], {-1, m}));
      } else {
        db = sum_to(engine::matmul(transpose(a, -1, -2), g[0]), sb);
      }
    }
    return {da, db};
  };
}

void linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out) {
  auto node = record("LinearBackward", {x, weight, bias}, {out});
  if (!node) return;
  node->save(node->needs_input_grad(1) ? x : Tensor());
  node->save(node->needs_input_grad(0) ? weight : Tensor());
  const int64_t in = weight.size(1), out_features = weight.size(0);
  const MatmulPrecision precision = matmul_precision();
  node->backward_fn = [in, out_features, precision](Node& n, const TensorList& g) -> TensorList {
    MatmulPrecisionScope scope(precision);
    Tensor dx, dw, db;
    if (n.needs_input_grad(0)) dx = engine::matmul(g[0], n.saved(1));
    if (n.needs_input_grad(1) || n.needs_input_grad(2)) {
      const Tensor g2 = reshape(g[0], {-1, out_features});
      if (n.needs_input_grad(1)) dw = engine::matmul(transpose(g2, 0, 1), reshape(n.saved(0), {-1, in}));
      if (n.needs_input_grad(2)) db = sum(g2, {0});
    }
    return {dx, dw, db};
  };
}

}  // namespace engine::autograd::formulas
