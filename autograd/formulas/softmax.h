// softmax.h: recorders for softmax, log_softmax and cross_entropy (formulas in softmax.cpp).
#pragma once
#include "tensor/tensor.h"

namespace engine::autograd::formulas {

void softmax(const Tensor& x, const Tensor& out, int dim);
void log_softmax(const Tensor& x, const Tensor& out, int dim);
void cross_entropy(const Tensor& logits, const Tensor& target, const Tensor& out);

// The constant one-hot matrix [N, C] of an i64 target [N], in `dtype`. No grad.
Tensor one_hot_rows(const Tensor& target, int64_t num_classes, DType dtype);

}  // namespace engine::autograd::formulas
