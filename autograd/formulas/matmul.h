// matmul.h: recorders for the linear-algebra family (formulas in matmul.cpp). Called by
// tensor/ops_matmul.cpp after the forward has produced `out`.
#pragma once
#include "tensor/tensor.h"

namespace engine::autograd::formulas {

// a [.., n, k], b [.., k, m], both at least 2-D (matmul's 1-D cases are views around this).
void matmul(const Tensor& a, const Tensor& b, const Tensor& out);
void linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out);

}  // namespace engine::autograd::formulas
