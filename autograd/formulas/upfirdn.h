// upfirdn.h: recorder for upfirdn2d (formula in upfirdn.cpp).
#pragma once
#include "tensor/ops.h"

namespace engine::autograd::formulas {

void upfirdn2d(const Tensor& x, const Tensor& f, const UpFirDnParams& p, const Tensor& out);

}  // namespace engine::autograd::formulas
