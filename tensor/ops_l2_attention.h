// ops_l2_attention.h: the fused L2-distance attention op (ops_l2_attention.cpp; kernels in
// cpu/l2_attention.h; backward in autograd/formulas/l2_attention.cpp). Its own header next to
// tensor/ops.h, as the one op only nn/attention.cpp calls.
#pragma once
#include <array>

#include "tensor/kernels/l2_attention.h"
#include "tensor/tensor.h"

namespace engine {

// q [B, Tq, H, d], k [B, Tk, H, d], v [B, Tk, H, dv] (any strides) -> [B, Tq, H * dv] (head n at
// channels [n dv, (n + 1) dv)): softmax_j(l) v with l_ij = -sqrt(max(c (|q_i - k_j|^2 + eps),
// c eps / 2)), c = 1/d -- nn::l2_attention's math (Note [L2 attention logits], nn/attention.cpp)
// without keeping any Tq x Tk matrix: the backward recomputes it per block of rows. A backward
// with create_graph records differentiable ops instead (double backward works, at the memory cost
// of the unfused form).
// form = L2AttnForm::sq_distance instead computes the discriminator's logits
// l_ij = (2 q_i.k_j - |k_j|^2) / sqrt(d) (Note [L2 logits without the row constant],
// nn/disc_attention.h; eps is ignored), with the same memory behaviour; its create_graph backward
// is smooth everywhere, so R1 can differentiate it twice.
using kernels::L2AttnForm;
Tensor l2_attention_fused(const Tensor& q, const Tensor& k, const Tensor& v, double eps,
                          L2AttnForm form = L2AttnForm::distance);
// No grad: the gradients of l2_attention_fused given grad_out, its output `out` and the per-row
// log-sum-exp `lse` [B, H, Tq] of its logits; those flagged in `needed` (q, k, v), contiguous.
struct L2AttentionGrads {
  Tensor q, k, v;
};
L2AttentionGrads l2_attention_fused_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                                             const Tensor& out, const Tensor& lse, double eps,
                                             const std::array<bool, 3>& needed,
                                             L2AttnForm form = L2AttnForm::distance);

}  // namespace engine
