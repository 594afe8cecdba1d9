// elementwise.h: recorders for the elementwise family (formulas in elementwise.cpp), and the two
// fused backward primitives that those formulas use.
//
// Note [fused pointwise backward]: the backward of a pointwise op y = f(x) is g * f'(x). Written
// as a chain of ops (sigmoid: mul(mul(g, rsub(1, out)), out)) it costs several passes over memory
// and a temporary per step. Instead it is one primitive op, pointwise_backward(kind, g, y) =
// g * f'(y), computed by a single kernel (tensor/kernels/elementwise.h, "...GradFn"), where y is
// the op's input x or, for sqrt, rsqrt, sigmoid and tanh, its saved output. The primitive is
// itself differentiable, so double backward works (R1 needs it):
//   d/dg = gg * f'(y)        = pointwise_backward(kind, gg, y)   (it is linear in g)
//   d/dy = gg * g * f''(y)   written with ops from ops.h; zero for the piecewise-linear kinds
//                            (relu, leaky_relu, clamp, abs), which therefore record no edge to y.
// f''(y) is the derivative with respect to y, i.e. with respect to the output where y is the
// output (sigmoid: d/dy [y (1 - y)] = 1 - 2y); the chain rule through the saved output's own
// grad_fn then reaches x.
#pragma once
#include <cstdint>

#include "tensor/tensor.h"

namespace engine {

enum class PointwiseGrad : uint8_t {
  // y = x
  relu,
  leaky_relu,  // p0 = slope, p1 = gain
  clamp,       // p0 = min, p1 = max (-inf / +inf when absent)
  abs,
  square,
  sin,
  cos,
  erf,
  gelu,
  gelu_tanh,
  softplus,
  // y = out
  sqrt,
  rsqrt,
  sigmoid,
  tanh,
};
const char* pointwise_grad_name(PointwiseGrad kind);  // "sigmoid_backward"

// g * f'(y), broadcasting g and y (Note [fused pointwise backward]).
Tensor pointwise_backward(PointwiseGrad kind, const Tensor& g, const Tensor& y, double p0 = 0, double p1 = 0);

// g * (a's share of maximum(a, b)'s gradient): 1 where a wins, 1/2 on ties, 0 where b wins
// (is_min: the share of minimum(a, b)). Linear in g; a and b only select.
Tensor maxmin_backward(const Tensor& g, const Tensor& a, const Tensor& b, bool is_min);

}  // namespace engine

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
void pow_scalar(const Tensor& x, const Tensor& out, double exponent);
// Every op whose backward is one pointwise_backward: relu, leaky_relu, clamp, abs, square, sin,
// cos, erf, gelu, gelu_tanh, softplus (saving x), sqrt, rsqrt, sigmoid, tanh (saving out).
void pointwise(PointwiseGrad kind, const Tensor& x, const Tensor& out, double p0 = 0, double p1 = 0);
void where(const Tensor& condition, const Tensor& a, const Tensor& b, const Tensor& out);
void maximum(const Tensor& a, const Tensor& b, const Tensor& out);
void minimum(const Tensor& a, const Tensor& b, const Tensor& out);
// The backward primitives' own backward (double backward).
void pointwise_backward(PointwiseGrad kind, const Tensor& g, const Tensor& y, const Tensor& out, double p0,
                        double p1);
void maxmin_backward(const Tensor& g, const Tensor& a, const Tensor& b, bool is_min, const Tensor& out);

}  // namespace engine::autograd::formulas
