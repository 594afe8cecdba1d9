// l2_attention.h: recorder for l2_attention_fused (formulas in l2_attention.cpp).
#pragma once
#include "tensor/kernels/l2_attention.h"
#include "tensor/tensor.h"

namespace engine::autograd::formulas {

// out = l2_attention_fused(q, k, v, eps, form); lse [B, H, Tq] is the per-row log-sum-exp of its logits.
void l2_attention_fused(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                        double eps, kernels::L2AttnForm form);

}  // namespace engine::autograd::formulas
