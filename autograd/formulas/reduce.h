// reduce.h: recorders for the reduction family (formulas in reduce.cpp).
#pragma once
#include "tensor/tensor.h"

namespace engine::autograd::formulas {

void sum(const Tensor& x, const Tensor& out, const Dims& dims, bool keepdim);
void mean(const Tensor& x, const Tensor& out, const Dims& dims, bool keepdim, int64_t count);
// name: "AmaxBackward" or "AminBackward".
void amax_amin(const char* name, const Tensor& x, const Tensor& out, const Dims& dims, bool keepdim);
void logsumexp(const Tensor& x, const Tensor& out, const Dims& dims, bool keepdim);
void var(const Tensor& x, const Tensor& out, const Dims& dims, int64_t correction, bool keepdim, int64_t count);

// Reshape a reduced gradient (keepdim or not) so that it broadcasts against x's shape.
Tensor unsqueeze_reduced(const Tensor& g, const Dims& x_sizes, const Dims& dims, bool keepdim);

// The constant mask (x == out_keepdim), in x's dtype: where the extrema of amax/amin sit. No grad.
Tensor extremum_mask(const Tensor& x, const Tensor& out_keepdim);

}  // namespace engine::autograd::formulas
