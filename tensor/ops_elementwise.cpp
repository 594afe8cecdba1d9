// ops_elementwise.cpp: elementwise ops with NumPy broadcasting. The math of each op is a functor in
// tensor/kernels/elementwise.h; the loop is tensor/cpu/elementwise.h; the backward formula is in
// autograd/formulas/elementwise.cpp, which also explains the two backward primitives defined at
// the end of this file (Note [fused pointwise backward]).
//
// Dtypes: arithmetic and activations take f32/f64 (both operands the same dtype: no implicit
// promotion, a mismatch is an error); comparisons, where and logical_not also take integer and
// bool tensors. Comparisons and logical_not return bool tensors and record no gradient.
#include <cmath>
#include <limits>

#include "autograd/formulas/elementwise.h"
#include "tensor/cpu/elementwise.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/elementwise.h"
#endif
#include "tensor/kernels/elementwise.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"

namespace engine {

namespace F = autograd::formulas;
namespace K = kernels;

namespace {

template <typename F>
Tensor binary_float(const char* name, const Tensor& a, const Tensor& b, F f) {
  check_same(name, a, b);
  check_floating(name, a);
  Tensor out = empty(broadcast_shapes(a.sizes(), b.sizes(), name), opts(a.dtype(), a.device()));
  dispatch_floating(a.dtype(), name, [&](auto zero) {
    using T = decltype(zero);
    if (use_cuda(name, a)) {
#if ENGINE_WITH_CUDA
      cuda::map_binary<T, T>(out, a, b, f);
#endif
    } else {
      cpu::map_binary<T, T>(out, a, b, f);
    }
  });
  return out;
}

template <typename F>
Tensor unary_float(const char* name, const Tensor& x, F f) {
  check_floating(name, x);
  Tensor out = empty(x.sizes(), opts(x.dtype(), x.device()));
  dispatch_floating(x.dtype(), name, [&](auto zero) {
    using T = decltype(zero);
    if (use_cuda(name, x)) {
#if ENGINE_WITH_CUDA
      cuda::map_unary<T, T>(out, x, f);
#endif
    } else {
      cpu::map_unary<T, T>(out, x, f);
    }
  });
  return out;
}

// Tensor-tensor comparison: same dtype (any numeric), broadcast, bool result.
template <typename F>
Tensor compare(const char* name, const Tensor& a, const Tensor& b, F f) {
  ENGINE_OP(name, a, b);
  check_same(name, a, b);
  Tensor out = empty(broadcast_shapes(a.sizes(), b.sizes(), name), opts(DType::boolean, a.device()));
  dispatch_numeric(a.dtype(), name, [&](auto zero) {
    using T = decltype(zero);
    if (use_cuda(name, a)) {
#if ENGINE_WITH_CUDA
      cuda::map_binary<uint8_t, T>(out, a, b, f);
#endif
    } else {
      cpu::map_binary<uint8_t, T>(out, a, b, f);
    }
  });
  return out;
}

// Tensor-scalar comparison or logical_not: bool result of x's shape.
template <typename F>
Tensor compare_unary(const char* name, const Tensor& x, F f) {
  ENGINE_OP(name, x);
  Tensor out = empty(x.sizes(), opts(DType::boolean, x.device()));
  dispatch_numeric(x.dtype(), name, [&](auto zero) {
    using T = decltype(zero);
    if (use_cuda(name, x)) {
#if ENGINE_WITH_CUDA
      cuda::map_unary<uint8_t, T>(out, x, f);
#endif
    } else {
      cpu::map_unary<uint8_t, T>(out, x, f);
    }
  });
  return out;
}

// A unary op whose backward is one pointwise_backward (Note [fused pointwise backward]).
template <typename Fn>
Tensor pointwise_op(const char* name, const Tensor& x, Fn f, PointwiseGrad kind, double p0 = 0, double p1 = 0) {
  ENGINE_OP(name, x);
  Tensor out = unary_float(name, x, f);
  F::pointwise(kind, x, out, p0, p1);
  return out;
}

}  // namespace

// ---- arithmetic ------------------------------------------------------------------------------

Tensor add(const Tensor& a, const Tensor& b) {
  ENGINE_OP("add", a, b);
  Tensor out = binary_float("add", a, b, K::AddFn{});
  F::add(a, b, out);
  return out;
}
Tensor sub(const Tensor& a, const Tensor& b) {
  ENGINE_OP("sub", a, b);
  Tensor out = binary_float("sub", a, b, K::SubFn{});
  F::sub(a, b, out);
  return out;
}
Tensor mul(const Tensor& a, const Tensor& b) {
  ENGINE_OP("mul", a, b);
  Tensor out = binary_float("mul", a, b, K::MulFn{});
  F::mul(a, b, out);
  return out;
}
Tensor div(const Tensor& a, const Tensor& b) {
  ENGINE_OP("div", a, b);
  Tensor out = binary_float("div", a, b, K::DivFn{});
  F::div(a, b, out);
  return out;
}
Tensor add(const Tensor& a, double s) {
  ENGINE_OP("add_scalar", a);
  Tensor out = unary_float("add_scalar", a, K::AddScalarFn{s});
  F::add_scalar(a, out);
  return out;
}
Tensor sub(const Tensor& a, double s) { return add(a, -s); }
Tensor mul(const Tensor& a, double s) {
  ENGINE_OP("mul_scalar", a);
  Tensor out = unary_float("mul_scalar", a, K::MulScalarFn{s});
  F::mul_scalar(a, out, s);
  return out;
}
Tensor div(const Tensor& a, double s) { return mul(a, 1.0 / s); }
Tensor rsub(double s, const Tensor& b) {
  ENGINE_OP("rsub_scalar", b);
  Tensor out = unary_float("rsub_scalar", b, K::RSubScalarFn{s});
  F::neg(b, out);
  return out;
}
Tensor rdiv(double s, const Tensor& b) {
  ENGINE_OP("rdiv_scalar", b);
  Tensor out = unary_float("rdiv_scalar", b, K::RDivScalarFn{s});
  F::rdiv_scalar(b, out);
  return out;
}
Tensor neg(const Tensor& x) {
  ENGINE_OP("neg", x);
  Tensor out = unary_float("neg", x, K::NegFn{});
  F::neg(x, out);
  return out;
}

// ---- powers, exponentials --------------------------------------------------------------------

Tensor exp(const Tensor& x) {
  ENGINE_OP("exp", x);
  Tensor out = unary_float("exp", x, K::ExpFn{});
  F::exp(x, out);
  return out;
}
Tensor log(const Tensor& x) {
  ENGINE_OP("log", x);
  Tensor out = unary_float("log", x, K::LogFn{});
  F::log(x, out);
  return out;
}
Tensor sqrt(const Tensor& x) { return pointwise_op("sqrt", x, K::SqrtFn{}, PointwiseGrad::sqrt); }
Tensor rsqrt(const Tensor& x) { return pointwise_op("rsqrt", x, K::RsqrtFn{}, PointwiseGrad::rsqrt); }
Tensor square(const Tensor& x) { return pointwise_op("square", x, K::SquareFn{}, PointwiseGrad::square); }

// Exponents with an exact or cheaper form skip the generic pow (PyTorch does the same), so
// pow(x, 2) is bitwise x * x and pow(x, 0.5) is sqrt(x). Non-integer exponents of negative
// numbers give NaN, 0^e is 0 for e > 0 and inf for e < 0, x^0 is 1 everywhere (C's pow rules).
Tensor pow(const Tensor& x, double e) {
  ENGINE_OP("pow", x);
  Tensor out;
  if (e == 0) out = unary_float("pow", x, K::OnesFn{});
  else if (e == 1) out = unary_float("pow", x, K::IdentityFn{});
  else if (e == 2) out = unary_float("pow", x, K::SquareFn{});
  else if (e == 3) out = unary_float("pow", x, K::CubeFn{});
  else if (e == 0.5) out = unary_float("pow", x, K::SqrtFn{});
  else if (e == -0.5) out = unary_float("pow", x, K::RsqrtFn{});
  else if (e == -1) out = unary_float("pow", x, K::RDivScalarFn{1.0});
  else if (e == -2) out = unary_float("pow", x, K::InvSquareFn{});
  else out = unary_float("pow", x, K::PowFn{e});
  F::pow_scalar(x, out, e);
  return out;
}

// ---- sign and magnitude ----------------------------------------------------------------------

Tensor abs(const Tensor& x) { return pointwise_op("abs", x, K::AbsFn{}, PointwiseGrad::abs); }
Tensor sign(const Tensor& x) {
  ENGINE_OP("sign", x);
  return unary_float("sign", x, K::SignFn{});  // piecewise constant: no Node, zero gradient
}

Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max) {
  ENGINE_OP("clamp", x);
  ENGINE_CHECK(min.has_value() || max.has_value(), "clamp: at least one of min and max must be given");
  ENGINE_CHECK(!(min && std::isnan(*min)) && !(max && std::isnan(*max)), "clamp: bounds must not be NaN (min {}, max {})",
               min ? *min : 0.0, max ? *max : 0.0);
  const double lo = min.value_or(-std::numeric_limits<double>::infinity());
  const double hi = max.value_or(std::numeric_limits<double>::infinity());
  Tensor out = unary_float("clamp", x, K::ClampFn{lo, hi});
  F::pointwise(PointwiseGrad::clamp, x, out, lo, hi);
  return out;
}

Tensor maximum(const Tensor& a, const Tensor& b) {
  ENGINE_OP("maximum", a, b);
  Tensor out = binary_float("maximum", a, b, K::MaximumFn{});
  F::maximum(a, b, out);
  return out;
}
Tensor minimum(const Tensor& a, const Tensor& b) {
  ENGINE_OP("minimum", a, b);
  Tensor out = binary_float("minimum", a, b, K::MinimumFn{});
  F::minimum(a, b, out);
  return out;
}

// ---- trigonometric and special functions ----------------------------------------------------

Tensor sin(const Tensor& x) { return pointwise_op("sin", x, K::SinFn{}, PointwiseGrad::sin); }
Tensor cos(const Tensor& x) { return pointwise_op("cos", x, K::CosFn{}, PointwiseGrad::cos); }
Tensor tanh(const Tensor& x) { return pointwise_op("tanh", x, K::TanhFn{}, PointwiseGrad::tanh); }
Tensor erf(const Tensor& x) { return pointwise_op("erf", x, K::ErfFn{}, PointwiseGrad::erf); }

// ---- activations -----------------------------------------------------------------------------

Tensor sigmoid(const Tensor& x) { return pointwise_op("sigmoid", x, K::SigmoidFn{}, PointwiseGrad::sigmoid); }
Tensor gelu(const Tensor& x, GeluApprox approximate) {
  if (approximate == GeluApprox::tanh)
    return pointwise_op("gelu", x, K::GeluTanhFn{}, PointwiseGrad::gelu_tanh);
  return pointwise_op("gelu", x, K::GeluFn{}, PointwiseGrad::gelu);
}
Tensor leaky_relu(const Tensor& x, double negative_slope, double gain) {
  return pointwise_op("leaky_relu", x, K::LeakyReluFn{negative_slope, gain}, PointwiseGrad::leaky_relu,
                      negative_slope, gain);
}
Tensor relu(const Tensor& x) { return pointwise_op("relu", x, K::ReluFn{}, PointwiseGrad::relu); }
Tensor softplus(const Tensor& x) { return pointwise_op("softplus", x, K::SoftplusFn{}, PointwiseGrad::softplus); }

// ---- selection -------------------------------------------------------------------------------

Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) {
  ENGINE_OP("where", condition, a, b);
  ENGINE_CHECK(condition.dtype() == DType::boolean || condition.dtype() == DType::u8,
               "where: condition must be a bool or u8 tensor, got {}", dtype_name(condition.dtype()));
  check_same("where", a, b);
  ENGINE_CHECK(condition.device() == a.device(), "where: device mismatch, condition on {} vs values on {}",
               condition.device().str(), a.device().str());
  const Dims shape = broadcast_shapes(broadcast_shapes(condition.sizes(), a.sizes(), "where"), b.sizes(), "where");
  Tensor out = empty(shape, opts(a.dtype(), a.device()));
  dispatch_numeric(a.dtype(), "where", [&](auto zero) {
    using T = decltype(zero);
    if (use_cuda("where", a)) {
#if ENGINE_WITH_CUDA
      cuda::map_ternary<T, uint8_t, T, T>(out, condition, a, b, K::WhereFn{});
#endif
    } else {
      cpu::map_ternary<T, uint8_t, T, T>(out, condition, a, b, K::WhereFn{});
    }
  });
  F::where(condition, a, b, out);
  return out;
}

// ---- comparisons and logic (no grad) ---------------------------------------------------------

Tensor eq(const Tensor& a, const Tensor& b) { return compare("eq", a, b, K::EqFn{}); }
Tensor ne(const Tensor& a, const Tensor& b) { return compare("ne", a, b, K::NeFn{}); }
Tensor lt(const Tensor& a, const Tensor& b) { return compare("lt", a, b, K::LtFn{}); }
Tensor le(const Tensor& a, const Tensor& b) { return compare("le", a, b, K::LeFn{}); }
Tensor gt(const Tensor& a, const Tensor& b) { return compare("gt", a, b, K::GtFn{}); }
Tensor ge(const Tensor& a, const Tensor& b) { return compare("ge", a, b, K::GeFn{}); }
Tensor gt(const Tensor& a, double s) { return compare_unary("gt_scalar", a, K::GtScalarFn{s}); }
Tensor lt(const Tensor& a, double s) { return compare_unary("lt_scalar", a, K::LtScalarFn{s}); }
Tensor ge(const Tensor& a, double s) { return compare_unary("ge_scalar", a, K::GeScalarFn{s}); }
Tensor le(const Tensor& a, double s) { return compare_unary("le_scalar", a, K::LeScalarFn{s}); }
Tensor logical_not(const Tensor& a) { return compare_unary("logical_not", a, K::LogicalNotFn{}); }

// ---- backward primitives (Note [fused pointwise backward]) -----------------------------------

Tensor pointwise_backward(PointwiseGrad kind, const Tensor& g, const Tensor& y, double p0, double p1) {
  const char* name = pointwise_grad_name(kind);
  ENGINE_OP(name, g, y);
  Tensor out;
  switch (kind) {
    case PointwiseGrad::relu: out = binary_float(name, g, y, K::ReluGradFn{}); break;
    case PointwiseGrad::leaky_relu: out = binary_float(name, g, y, K::LeakyReluGradFn{p0, p1}); break;
    case PointwiseGrad::clamp: out = binary_float(name, g, y, K::ClampGradFn{p0, p1}); break;
    case PointwiseGrad::abs: out = binary_float(name, g, y, K::AbsGradFn{}); break;
    case PointwiseGrad::square: out = binary_float(name, g, y, K::SquareGradFn{}); break;
    case PointwiseGrad::sin: out = binary_float(name, g, y, K::SinGradFn{}); break;
    case PointwiseGrad::cos: out = binary_float(name, g, y, K::CosGradFn{}); break;
    case PointwiseGrad::erf: out = binary_float(name, g, y, K::ErfGradFn{}); break;
    case PointwiseGrad::gelu: out = binary_float(name, g, y, K::GeluGradFn{}); break;
    case PointwiseGrad::gelu_tanh: out = binary_float(name, g, y, K::GeluTanhGradFn{}); break;
    case PointwiseGrad::softplus: out = binary_float(name, g, y, K::SoftplusGradFn{}); break;
    case PointwiseGrad::sqrt: out = binary_float(name, g, y, K::SqrtGradFn{}); break;
    case PointwiseGrad::rsqrt: out = binary_float(name, g, y, K::RsqrtGradFn{}); break;
    case PointwiseGrad::sigmoid: out = binary_float(name, g, y, K::SigmoidGradFn{}); break;
    case PointwiseGrad::tanh: out = binary_float(name, g, y, K::TanhGradFn{}); break;
  }
  ENGINE_CHECK(out.defined(), "pointwise_backward: unknown kind {}", int(kind));
  F::pointwise_backward(kind, g, y, out, p0, p1);
  return out;
}

Tensor maxmin_backward(const Tensor& g, const Tensor& a, const Tensor& b, bool is_min) {
  const char* name = is_min ? "minimum_backward" : "maximum_backward";
  ENGINE_OP(name, g, a, b);
  check_same(name, g, a);
  check_same(name, a, b);
  check_floating(name, g);
  const Dims shape = broadcast_shapes(broadcast_shapes(g.sizes(), a.sizes(), name), b.sizes(), name);
  Tensor out = empty(shape, opts(g.dtype(), g.device()));
  dispatch_floating(g.dtype(), name, [&](auto zero) {
    using T = decltype(zero);
    if (use_cuda(name, g)) {
#if ENGINE_WITH_CUDA
      if (is_min)
        cuda::map_ternary<T, T, T, T>(out, g, a, b, K::MinGradFn{});
      else
        cuda::map_ternary<T, T, T, T>(out, g, a, b, K::MaxGradFn{});
#endif
    } else if (is_min) {
      cpu::map_ternary<T, T, T, T>(out, g, a, b, K::MinGradFn{});
    } else {
      cpu::map_ternary<T, T, T, T>(out, g, a, b, K::MaxGradFn{});
    }
  });
  F::maxmin_backward(g, a, b, is_min, out);
  return out;
}

}  // namespace engine
