// deform.h: recorder for deform_conv2d (formulas in deform.cpp).
#pragma once
#include "tensor/ops.h"

namespace engine::autograd::formulas {

void deform_conv2d(const Tensor& x, const Tensor& offset, const Tensor& weight, const Tensor& bias, const Tensor& mask,
                   const Conv2dParams& p, const Tensor& out);

}  // namespace engine::autograd::formulas
