// fused.h: recorders for the fused ops of tensor/ops_fused.cpp (formulas in fused.cpp).
#pragma once
#include "tensor/kernels/bias_act.h"
#include "tensor/tensor.h"

namespace engine::autograd::formulas {

// out = bias_act(x, bias, dim, p); bias may be undefined.
void bias_act(const Tensor& x, const Tensor& bias, const Tensor& out, int64_t dim, const kernels::BiasActParams& p);
// out = bias_act_grad(gy, y, p).
void bias_act_grad(const Tensor& gy, const Tensor& y, const Tensor& out, const kernels::BiasActParams& p);

}  // namespace engine::autograd::formulas
