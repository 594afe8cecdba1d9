// elementwise.h: portable bodies of the elementwise ops (forward, and the fused pointwise pieces
// of their backward). Each functor maps scalars to a scalar; the CPU loops (tensor/cpu/elementwise.h)
// and the CUDA kernels apply them over broadcast, strided operands.
//
// Formulas follow PyTorch's CPU kernels so that parity tests can use tight tolerances:
//   gelu(x)      = x/2 (1 + erf(x / sqrt 2))
//   gelu_tanh(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))            (Hendrycks & Gimpel)
//   leaky_relu   = (x > 0 ? x : slope x) * gain                          (StyleGAN: 0.2, sqrt 2)
//   softplus     = x > 20 ? x : max(x, 0) + log1p(exp(-|x|))              (beta 1, threshold 20)
//   clamp        = min(max(x, lo), hi), NaN stays NaN
//   maximum      = NaN if either is NaN, else the larger
// The "...GradFn" functors compute g * f'(y) in one pass (Note [fused pointwise backward] in
// autograd/formulas/elementwise.h); y is the op's input, or its output where noted.
//
// Nothing here may use std:: containers, exceptions or host-only calls: nvcc compiles this file.
#pragma once
#include <type_traits>

#include "tensor/kernels/common.h"

namespace engine::kernels {

// ---- typed math: float math in float, double math in double ---------------------------------
// Unqualified exp(float) on the host resolves to the C function exp(double), which silently
// computes in double; these overloads pick expf & co. (also available in CUDA device code).
namespace math {
ENGINE_HD float exp(float x) { return ::expf(x); }
ENGINE_HD double exp(double x) { return ::exp(x); }
ENGINE_HD float log(float x) { return ::logf(x); }
ENGINE_HD double log(double x) { return ::log(x); }
ENGINE_HD float log1p(float x) { return ::log1pf(x); }
ENGINE_HD double log1p(double x) { return ::log1p(x); }
ENGINE_HD float sqrt(float x) { return ::sqrtf(x); }
ENGINE_HD double sqrt(double x) { return ::sqrt(x); }
ENGINE_HD float sin(float x) { return ::sinf(x); }
ENGINE_HD double sin(double x) { return ::sin(x); }
ENGINE_HD float cos(float x) { return ::cosf(x); }
ENGINE_HD double cos(double x) { return ::cos(x); }
ENGINE_HD float tanh(float x) { return ::tanhf(x); }
ENGINE_HD double tanh(double x) { return ::tanh(x); }
ENGINE_HD float erf(float x) { return ::erff(x); }
ENGINE_HD double erf(double x) { return ::erf(x); }
ENGINE_HD float pow(float x, float e) { return ::powf(x, e); }
ENGINE_HD double pow(double x, double e) { return ::pow(x, e); }
ENGINE_HD float abs(float x) { return ::fabsf(x); }
ENGINE_HD double abs(double x) { return ::fabs(x); }
}  // namespace math

// Constants (M_SQRT1_2 & co. are POSIX extensions; spell them out).
constexpr double kSqrt1_2 = 0.70710678118654752440;    // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi): the N(0,1) density at 0
constexpr double kSqrt2OverPi = 0.79788456080286535588; // sqrt(2 / pi)
constexpr double kTwoOverSqrtPi = 1.12837916709551257390;  // 2 / sqrt(pi): erf'(0)
constexpr double kGeluKappa = 0.044715;
constexpr double kSoftplusThreshold = 20.0;

// Comparisons with a double scalar happen in the tensor's type for floating tensors (so that
// f32(0.1) > 0.1 is false, as in PyTorch) and in double for integer tensors (so that 1 > 0.5).
template <typename T>
using CompareType = std::conditional_t<std::is_floating_point_v<T>, T, double>;

// ---- binary ----
struct AddFn { template <typename T> ENGINE_HD T operator()(T a, T b) const { return a + b; } };
struct SubFn { template <typename T> ENGINE_HD T operator()(T a, T b) const { return a - b; } };
struct MulFn { template <typename T> ENGINE_HD T operator()(T a, T b) const { return a * b; } };
struct DivFn { template <typename T> ENGINE_HD T operator()(T a, T b) const { return a / b; } };
// NaN propagates from either side (a != a is the portable isnan).
struct MaximumFn {
  template <typename T> ENGINE_HD T operator()(T a, T b) const { return a != a ? a : (b != b ? b : (a > b ? a : b)); }
};
struct MinimumFn {
  template <typename T> ENGINE_HD T operator()(T a, T b) const { return a != a ? a : (b != b ? b : (a < b ? a : b)); }
};

// ---- comparisons (bool results; the CPU loop stores them as u8 0/1) ----
struct EqFn { template <typename T> ENGINE_HD bool operator()(T a, T b) const { return a == b; } };
struct NeFn { template <typename T> ENGINE_HD bool operator()(T a, T b) const { return a != b; } };
struct LtFn { template <typename T> ENGINE_HD bool operator()(T a, T b) const { return a < b; } };
struct LeFn { template <typename T> ENGINE_HD bool operator()(T a, T b) const { return a <= b; } };
struct GtFn { template <typename T> ENGINE_HD bool operator()(T a, T b) const { return a > b; } };
struct GeFn { template <typename T> ENGINE_HD bool operator()(T a, T b) const { return a >= b; } };
struct GtScalarFn {
  double s;
  template <typename T> ENGINE_HD bool operator()(T x) const { return CompareType<T>(x) > CompareType<T>(s); }
};
struct LtScalarFn {
  double s;
  template <typename T> ENGINE_HD bool operator()(T x) const { return CompareType<T>(x) < CompareType<T>(s); }
};
struct GeScalarFn {
  double s;
  template <typename T> ENGINE_HD bool operator()(T x) const { return CompareType<T>(x) >= CompareType<T>(s); }
};
struct LeScalarFn {
  double s;
  template <typename T> ENGINE_HD bool operator()(T x) const { return CompareType<T>(x) <= CompareType<T>(s); }
};
struct LogicalNotFn { template <typename T> ENGINE_HD bool operator()(T x) const { return x == T(0); } };

// ---- ternary ----
struct WhereFn {
  template <typename T> ENGINE_HD T operator()(uint8_t c, T a, T b) const { return c ? a : b; }
};

// ---- with a scalar ----
struct AddScalarFn { double s; template <typename T> ENGINE_HD T operator()(T x) const { return x + T(s); } };
struct MulScalarFn { double s; template <typename T> ENGINE_HD T operator()(T x) const { return x * T(s); } };
struct RSubScalarFn { double s; template <typename T> ENGINE_HD T operator()(T x) const { return T(s) - x; } };
struct RDivScalarFn { double s; template <typename T> ENGINE_HD T operator()(T x) const { return T(s) / x; } };
// pow with the exponent in the tensor's type (as PyTorch); the op routes 0, 1, 2, 3, 0.5, -0.5,
// -1, -2 to the exact functors below instead.
struct PowFn { double e; template <typename T> ENGINE_HD T operator()(T x) const { return math::pow(x, T(e)); } };
struct OnesFn { template <typename T> ENGINE_HD T operator()(T) const { return T(1); } };  // x^0 = 1, even 0^0, NaN^0
struct IdentityFn { template <typename T> ENGINE_HD T operator()(T x) const { return x; } };
struct CubeFn { template <typename T> ENGINE_HD T operator()(T x) const { return x * x * x; } };
struct InvSquareFn { template <typename T> ENGINE_HD T operator()(T x) const { return T(1) / (x * x); } };
struct ClampFn {
  double lo, hi;  // -inf / +inf for a missing bound
  template <typename T> ENGINE_HD T operator()(T x) const {
    T r = x;
    if (r < T(lo)) r = T(lo);
    if (r > T(hi)) r = T(hi);  // min > max gives max everywhere, as PyTorch
    return r;
  }
};
struct LeakyReluFn {
  double slope, gain;
  template <typename T> ENGINE_HD T operator()(T x) const { return (x > T(0) ? x : x * T(slope)) * T(gain); }
};

// ---- unary ----
struct NegFn { template <typename T> ENGINE_HD T operator()(T x) const { return -x; } };
struct ExpFn { template <typename T> ENGINE_HD T operator()(T x) const { return math::exp(x); } };
struct LogFn { template <typename T> ENGINE_HD T operator()(T x) const { return math::log(x); } };
struct SqrtFn { template <typename T> ENGINE_HD T operator()(T x) const { return math::sqrt(x); } };
struct RsqrtFn { template <typename T> ENGINE_HD T operator()(T x) const { return T(1) / math::sqrt(x); } };
struct SquareFn { template <typename T> ENGINE_HD T operator()(T x) const { return x * x; } };
struct AbsFn { template <typename T> ENGINE_HD T operator()(T x) const { return math::abs(x); } };
// sign(NaN) = 0 and sign(+-0) = 0, as PyTorch.
struct SignFn {
  template <typename T> ENGINE_HD T operator()(T x) const { return T(int(T(0) < x) - int(x < T(0))); }
};
struct SinFn { template <typename T> ENGINE_HD T operator()(T x) const { return math::sin(x); } };
struct CosFn { template <typename T> ENGINE_HD T operator()(T x) const { return math::cos(x); } };
struct SigmoidFn {
  template <typename T> ENGINE_HD T operator()(T x) const { return T(1) / (T(1) + math::exp(-x)); }
};
struct TanhFn { template <typename T> ENGINE_HD T operator()(T x) const { return math::tanh(x); } };
struct ErfFn { template <typename T> ENGINE_HD T operator()(T x) const { return math::erf(x); } };
struct GeluFn {
  template <typename T> ENGINE_HD T operator()(T x) const {
    return x * T(0.5) * (T(1) + math::erf(x * T(kSqrt1_2)));
  }
};
struct GeluTanhFn {
  template <typename T> ENGINE_HD T operator()(T x) const {
    const T inner = T(kSqrt2OverPi) * (x + T(kGeluKappa) * x * x * x);
    return T(0.5) * x * (T(1) + math::tanh(inner));
  }
};
// NaN < 0 is false: relu(NaN) = NaN (PyTorch's clamp_min propagates it).
struct ReluFn { template <typename T> ENGINE_HD T operator()(T x) const { return x < T(0) ? T(0) : x; } };
struct SoftplusFn {
  template <typename T> ENGINE_HD T operator()(T x) const {
    if (x > T(kSoftplusThreshold)) return x;  // log1p(exp(x)) == x in floating point
    return max_of(x, T(0)) + math::log1p(math::exp(-math::abs(x)));
  }
};

// ---- fused backward: g * f'(y) (Note [fused pointwise backward]) ----
// y = x (the op's input)
struct LeakyReluGradFn {
  double slope, gain;
  template <typename T> ENGINE_HD T operator()(T g, T x) const {
    const T gg = g * T(gain);
    return x > T(0) ? gg : gg * T(slope);  // x == 0 takes the slope side, as PyTorch
  }
};
struct ReluGradFn {  // exactly 0 (not g * 0) where x <= 0, as PyTorch's threshold_backward
  template <typename T> ENGINE_HD T operator()(T g, T x) const { return x > T(0) ? g : T(0); }
};
struct ClampGradFn {  // passes where lo <= x <= hi, inclusive (as PyTorch)
  double lo, hi;
  template <typename T> ENGINE_HD T operator()(T g, T x) const { return (x >= T(lo) && x <= T(hi)) ? g : T(0); }
};
struct AbsGradFn { template <typename T> ENGINE_HD T operator()(T g, T x) const { return g * SignFn{}(x); } };
struct SquareGradFn { template <typename T> ENGINE_HD T operator()(T g, T x) const { return g * (T(2) * x); } };
struct SinGradFn { template <typename T> ENGINE_HD T operator()(T g, T x) const { return g * math::cos(x); } };
struct CosGradFn { template <typename T> ENGINE_HD T operator()(T g, T x) const { return -(g * math::sin(x)); } };
struct ErfGradFn {
  template <typename T> ENGINE_HD T operator()(T g, T x) const { return g * (T(kTwoOverSqrtPi) * math::exp(-(x * x))); }
};
struct GeluGradFn {  // Phi(x) + x phi(x)
  template <typename T> ENGINE_HD T operator()(T g, T x) const {
    const T cdf = T(0.5) * (T(1) + math::erf(x * T(kSqrt1_2)));
    const T pdf = T(kInvSqrt2Pi) * math::exp(T(-0.5) * x * x);
    return g * (cdf + x * pdf);
  }
};
struct GeluTanhGradFn {  // (1 + t)/2 + x/2 (1 - t^2) u',  u = k (x + c x^3), u' = k (1 + 3 c x^2), t = tanh u
  template <typename T> ENGINE_HD T operator()(T g, T x) const {
    const T x2 = x * x;
    const T t = math::tanh(T(kSqrt2OverPi) * (x + T(kGeluKappa) * x2 * x));
    const T du = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluKappa) * x2);
    return g * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du);
  }
};
struct SoftplusGradFn {  // sigmoid(x), or 1 above the threshold
  template <typename T> ENGINE_HD T operator()(T g, T x) const {
    if (x > T(kSoftplusThreshold)) return g;
    const T z = math::exp(x);
    return g * z / (z + T(1));
  }
};
// y = out (the op's output)
struct SqrtGradFn { template <typename T> ENGINE_HD T operator()(T g, T y) const { return g / (T(2) * y); } };
struct RsqrtGradFn {
  template <typename T> ENGINE_HD T operator()(T g, T y) const { return T(-0.5) * g * (y * y * y); }
};
struct SigmoidGradFn {
  template <typename T> ENGINE_HD T operator()(T g, T y) const { return g * (T(1) - y) * y; }
};
struct TanhGradFn { template <typename T> ENGINE_HD T operator()(T g, T y) const { return g * (T(1) - y * y); } };

// maximum/minimum backward: g times a's share of the gradient: 1 where a wins, 1/2 on a tie, 0
// where b wins; where either is NaN both get g (as PyTorch's masked_fill formula).
struct MaxGradFn {
  template <typename T> ENGINE_HD T operator()(T g, T a, T b) const {
    return a == b ? g * T(0.5) : (a < b ? T(0) : g);
  }
};
struct MinGradFn {
  template <typename T> ENGINE_HD T operator()(T g, T a, T b) const {
    return a == b ? g * T(0.5) : (a > b ? T(0) : g);
  }
};

}  // namespace engine::kernels
