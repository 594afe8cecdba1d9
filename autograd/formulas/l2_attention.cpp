// l2_attention.cpp: backward of l2_attention_fused (tensor/ops_l2_attention.cpp).
//
// With u_ij = c (|q_i|^2 + |k_j|^2 - 2 q_i.k_j + eps), c = 1/d, s = sqrt(max(u, c eps / 2)),
// A = softmax_j(-s), out = A V and dO = grad_out (per batch and head):
//   dV   = A^T dO
//   dA   = dO V^T;  dl = A (dA - rowsum(dA A))          (softmax' ; rowsum(dA A)_i = dO_i . out_i)
//   G    = c dL/du = -c dl / (2 s) [u >= c eps / 2]     (sqrt' and clamp', as nn::l2_attention's ops)
//   dQ   = 2 (Q rowsum_j(G) - G K),   dK = 2 (K colsum_i(G) - G^T Q)
// First order (no create_graph): the fused primitive l2_attention_fused_backward, which rebuilds A
// from the saved lse a block of rows at a time. With create_graph (a double backward, e.g. a
// gradgradcheck of the generator's attention) the same formulas are recorded from differentiable
// ops over the full [B, H, Tq, Tk] matrices, so every higher derivative exists; only that rare path
// pays the unfused memory.
//
// The discriminator's form (kernels::L2AttnForm::sq_distance, l_ij = s (2 q_i.k_j - |k_j|^2),
// s = 1/sqrt(d); derivation in tensor/kernels/l2_attention.h), same dV and dl:
//   dQ   = 2s dl K,   dK = 2s (dl^T Q - K colsum_i(dl))
// Its create_graph path is what R1 differentiates (the D_r1 phase: a gradient w.r.t. the image
// with create_graph, then a backward through it): all ops smooth, so the double backward is exact.
#include "autograd/formulas/l2_attention.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/ops.h"
#include "tensor/ops_l2_attention.h"

namespace engine::autograd::formulas {

namespace {

// The formulas of the header comment from differentiable ops. q, k, v [B, T, H, *]; g [B, Tq, H*dv].
TensorList l2_attention_vjp_differentiable(const Tensor& g, const Tensor& q, const Tensor& k, const Tensor& v,
                                           double eps) {
  const int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), dv = v.size(3);
  const double c = 1.0 / double(q.size(3)), floor_u = 0.5 * c * eps;
  const Tensor qp = permute(q, {0, 2, 1, 3}), kp = permute(k, {0, 2, 1, 3}), vp = permute(v, {0, 2, 1, 3});
  const Tensor qn = sum(square(qp), {-1}, true);                          // [B, H, Tq, 1]
  const Tensor kn = transpose(sum(square(kp), {-1}, true), -1, -2);       // [B, H, 1, Tk]
  const Tensor qk = matmul(qp, transpose(kp, -1, -2));                    // [B, H, Tq, Tk]
  const Tensor u = add(mul(sub(add(qn, kn), mul(qk, 2.0)), c), c * eps);
  const Tensor s = sqrt(clamp(u, floor_u, std::nullopt));
  const Tensor a = softmax(neg(s), -1);
  const Tensor go = permute(reshape(g, {B, Tq, H, dv}), {0, 2, 1, 3});   // [B, H, Tq, dv]
  const Tensor dv_h = matmul(transpose(a, -1, -2), go);                   // [B, H, Tk, dv]
  const Tensor da = matmul(go, transpose(vp, -1, -2));                    // [B, H, Tq, Tk]
  const Tensor dl = mul(a, sub(da, sum(mul(da, a), {-1}, true)));
  const Tensor mask = to_dtype(ge(u, floor_u), u.dtype());                // constant
  const Tensor gu = mul(mul(div(dl, s), -0.5 * c), mask);                 // c dL/du
  const Tensor dq = mul(sub(mul(qp, sum(gu, {-1}, true)), matmul(gu, kp)), 2.0);
  const Tensor dk = mul(sub(mul(kp, transpose(sum(gu, {-2}, true), -1, -2)), matmul(transpose(gu, -1, -2), qp)), 2.0);
  return {permute(dq, {0, 2, 1, 3}), permute(dk, {0, 2, 1, 3}), permute(dv_h, {0, 2, 1, 3})};
}

// The sq_distance formulas (header comment) from differentiable ops; the logits are rounded as the
// unfused nn/disc_attention.cpp computes them.
TensorList l2sq_attention_vjp_differentiable(const Tensor& g, const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t B = q.size(0), Tq = q.size(1), H = q.size(2), dv = v.size(3);
  const double s = 1.0 / std::sqrt(double(q.size(3)));
  const Tensor qp = permute(q, {0, 2, 1, 3}), kp = permute(k, {0, 2, 1, 3}), vp = permute(v, {0, 2, 1, 3});
  const Tensor kn = transpose(sum(square(kp), {-1}, true), -1, -2);     // [B, H, 1, Tk]
  const Tensor qk = matmul(qp, transpose(kp, -1, -2));                  // [B, H, Tq, Tk]
  const Tensor a = softmax(sub(mul(qk, 2.0 * s), mul(kn, s)), -1);
  const Tensor go = permute(reshape(g, {B, Tq, H, dv}), {0, 2, 1, 3});  // [B, H, Tq, dv]
  const Tensor dv_h = matmul(transpose(a, -1, -2), go);                 // [B, H, Tk, dv]
  const Tensor da = matmul(go, transpose(vp, -1, -2));                  // [B, H, Tq, Tk]
  const Tensor dl = mul(a, sub(da, sum(mul(da, a), {-1}, true)));
  const Tensor dq = mul(matmul(dl, kp), 2.0 * s);
  const Tensor dk =
      mul(sub(matmul(transpose(dl, -1, -2), qp), mul(kp, transpose(sum(dl, {-2}, true), -1, -2))), 2.0 * s);
  return {permute(dq, {0, 2, 1, 3}), permute(dk, {0, 2, 1, 3}), permute(dv_h, {0, 2, 1, 3})};
}

}  // namespace

void l2_attention_fused(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        double eps, kernels::L2AttnForm form) {
  auto node = record("L2AttentionFusedBackward", {q, k, v}, {out});
  if (!node) return;
  node->save(q, SaveMode::exact);
  node->save(k, SaveMode::exact);
  node->save(v, SaveMode::exact);
  node->save(out, SaveMode::exact);  // Note [saved outputs]
  node->save(lse, SaveMode::exact);
  node->backward_fn = [eps, form](Node& n, const TensorList& g) -> TensorList {
    const Tensor q = n.saved(0), k = n.saved(1), v = n.saved(2);
    if (grad_enabled())
      return form == kernels::L2AttnForm::sq_distance ? l2sq_attention_vjp_differentiable(g[0], q, k, v)
                                                       : l2_attention_vjp_differentiable(g[0], q, k, v, eps);
    const std::array<bool, 3> needed = {n.needs_input_grad(0), n.needs_input_grad(1), n.needs_input_grad(2)};
    L2AttentionGrads r = l2_attention_fused_backward(g[0], q, k, v, n.saved(3), n.saved(4), eps, needed, form);
    return {r.q, r.k, r.v};
  };
}

}  // namespace engine::autograd::formulas
