// view.h: recorders for the view family (formulas in view.cpp). Called by tensor/ops_view.cpp
// after the forward has produced `out`; each records a Node when `x` requires grad.
#pragma once
#include "tensor/tensor.h"

namespace engine::autograd::formulas {

void reshape_like(const Tensor& x, const Tensor& out);
void permute(const Tensor& x, const Tensor& out, const Dims& dims);
void slice(const Tensor& x, const Tensor& out, int dim, int64_t start, int64_t end, int64_t step);
void slice_backward(const Tensor& g, const Tensor& out, int dim, int64_t start, int64_t end, int64_t step);
void expand(const Tensor& x, const Tensor& out);
void as_strided(const Tensor& x, const Tensor& out);
void identity(const char* name, const Tensor& x, const Tensor& out);
void to_dtype(const Tensor& x, const Tensor& out);
void pad_into(const Tensor& x, const Tensor& out, const Dims& offsets);

}  // namespace engine::autograd::formulas
