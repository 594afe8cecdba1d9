// index.h: recorders for the indexing family (formulas in index.cpp). Called by
// tensor/ops_index.cpp after the forward has produced `out`; each records a Node when a
// differentiable input requires grad. `dim` is already wrapped (non-negative).
#pragma once
#include "tensor/tensor.h"

namespace engine::autograd::formulas {

void gather(const Tensor& x, int dim, const Tensor& index, const Tensor& out);
void index_select(const Tensor& x, int dim, const Tensor& index, const Tensor& out);
void scatter_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src, const Tensor& out);
void index_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src, const Tensor& out);
void cat(const TensorList& xs, int dim, const Tensor& out);
void stack(const TensorList& xs, int dim, const Tensor& out);

}  // namespace engine::autograd::formulas
