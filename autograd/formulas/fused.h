// fused.h: recorders for the fused ops of tensor/ops_fused.cpp (formulas in fused.cpp).
#pragma once
#include "tensor/kernels/bias_act.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

namespace engine::autograd::formulas {

// out = bias_act(x, bias, dim, p); bias may be undefined.
void bias_act(const Tensor& x, const Tensor& bias, const Tensor& out, int64_t dim, const kernels::BiasActParams& p);
// out = bias_act_grad(gy, y, p).
void bias_act_grad(const Tensor& gy, const Tensor& y, const Tensor& out, const kernels::BiasActParams& p);
// out = modulated_weight(kernel, styles, p) (Note [modulated_weight backward]).
void modulated_weight(const Tensor& kernel, const Tensor& styles, const Tensor& out, const ModulatedWeightParams& p);
// The backward of modulated_weight written with differentiable ops (the create_graph path):
// {dL/dkernel, dL/dstyles} from grad = dL/dW; entries undefined where need_* is false.
TensorList modulated_weight_grad_ops(const Tensor& grad, const Tensor& kernel, const Tensor& styles,
                                     const ModulatedWeightParams& p, bool need_kernel, bool need_styles);

}  // namespace engine::autograd::formulas
