// elementwise.h: recorders for the elementwise family (formulas in elementwise.cpp).
#pragma once
#include "tensor/tensor.h"

namespace engine::autograd::formulas {

void add(const Tensor& a, const Tensor& b, const Tensor& out);
void sub(const Tensor& a, const Tensor& b, const Tensor& out);
void mul(const Tensor& a, const Tensor& b, const Tensor& out);
void div(const Tensor& a, const Tensor& b, const Tensor& out);
void add_scalar(const Tensor& x, const Tensor& out);
void mul_scalar(const Tensor& x, const Tensor& out, double s);
void rdiv_scalar(const Tensor& x, const Tensor& out);
void neg(const Tensor& x, const Tensor& out);
void exp(const Tensor& x, const Tensor& out);
void log(const Tensor& x, const Tensor& out);

}  // namespace engine::autograd::formulas
