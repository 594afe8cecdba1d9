// conv.h: recorders for the convolution family (formulas in conv.cpp). Called by
// tensor/ops_conv.cpp after the forward has produced `out`.
#pragma once
#include "tensor/ops.h"

namespace engine::autograd::formulas {

void conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, const Conv2dParams& p);
void conv_transpose2d(const Tensor& y, const Tensor& weight, const Tensor& bias, const Tensor& out,
                      const Conv2dParams& p);
void conv2d_weight(const Tensor& x, const Tensor& gy, const Tensor& out, int64_t kh, int64_t kw,
                   const Conv2dParams& p);

}  // namespace engine::autograd::formulas
