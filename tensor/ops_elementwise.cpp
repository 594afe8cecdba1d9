// ops_elementwise.cpp: elementwise ops with NumPy broadcasting. The math of each op is a functor in
// tensor/kernels/elementwise.h; the loop is tensor/cpu/elementwise.h; the backward formula is in
// autograd/formulas/elementwise.cpp.
#include "autograd/formulas/elementwise.h"
#include "tensor/cpu/elementwise.h"
#include "tensor/kernels/elementwise.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"

namespace engine {

namespace {

template <typename F>
Tensor binary_float(const char* name, const Tensor& a, const Tensor& b, F f) {
  check_same(name, a, b);
  check_floating(name, a);
  check_cpu(name, a);
  Tensor out = empty(broadcast_shapes(a.sizes(), b.sizes(), name), opts(a.dtype(), a.device()));
  dispatch_floating(a.dtype(), name, [&](auto zero) {
    using T = decltype(zero);
    cpu::map_binary<T, T>(out, a, b, f);
  });
  return out;
}

template <typename F>
Tensor unary_float(const char* name, const Tensor& x, F f) {
  check_floating(name, x);
  check_cpu(name, x);
  Tensor out = empty(x.sizes(), opts(x.dtype(), x.device()));
  dispatch_floating(x.dtype(), name, [&](auto zero) {
    using T = decltype(zero);
    cpu::map_unary<T, T>(out, x, f);
  });
  return out;
}

}  // namespace

namespace F = autograd::formulas;

Tensor add(const Tensor& a, const Tensor& b) {
  ENGINE_OP("add", a, b);
  Tensor out = binary_float("add", a, b, kernels::AddFn{});
  F::add(a, b, out);
  return out;
}
Tensor sub(const Tensor& a, const Tensor& b) {
  ENGINE_OP("sub", a, b);
  Tensor out = binary_float("sub", a, b, kernels::SubFn{});
  F::sub(a, b, out);
  return out;
}
Tensor mul(const Tensor& a, const Tensor& b) {
  ENGINE_OP("mul", a, b);
  Tensor out = binary_float("mul", a, b, kernels::MulFn{});
  F::mul(a, b, out);
  return out;
}
Tensor div(const Tensor& a, const Tensor& b) {
  ENGINE_OP("div", a, b);
  Tensor out = binary_float("div", a, b, kernels::DivFn{});
  F::div(a, b, out);
  return out;
}
Tensor add(const Tensor& a, double s) {
  ENGINE_OP("add_scalar", a);
  Tensor out = unary_float("add_scalar", a, kernels::AddScalarFn{s});
  F::add_scalar(a, out);
  return out;
}
Tensor sub(const Tensor& a, double s) { return add(a, -s); }
Tensor mul(const Tensor& a, double s) {
  ENGINE_OP("mul_scalar", a);
  Tensor out = unary_float("mul_scalar", a, kernels::MulScalarFn{s});
  F::mul_scalar(a, out, s);
  return out;
}
Tensor div(const Tensor& a, double s) { return mul(a, 1.0 / s); }
Tensor rsub(double s, const Tensor& b) {
  ENGINE_OP("rsub_scalar", b);
  Tensor out = unary_float("rsub_scalar", b, kernels::RSubScalarFn{s});
  F::neg(b, out);
  return out;
}
Tensor rdiv(double s, const Tensor& b) {
  ENGINE_OP("rdiv_scalar", b);
  Tensor out = unary_float("rdiv_scalar", b, kernels::RDivScalarFn{s});
  F::rdiv_scalar(b, out);
  return out;
}
Tensor neg(const Tensor& x) {
  ENGINE_OP("neg", x);
  Tensor out = unary_float("neg", x, kernels::NegFn{});
  F::neg(x, out);
  return out;
}
Tensor exp(const Tensor& x) {
  ENGINE_OP("exp", x);
  Tensor out = unary_float("exp", x, kernels::ExpFn{});
  F::exp(x, out);
  return out;
}
Tensor log(const Tensor& x) {
  ENGINE_OP("log", x);
  Tensor out = unary_float("log", x, kernels::LogFn{});
  F::log(x, out);
  return out;
}

}  // namespace engine
