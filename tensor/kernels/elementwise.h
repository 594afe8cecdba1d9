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
#if !defined(__CUDA_ARCH__)
#include <bit>
#endif

#include "tensor/kernels/common.h"

namespace engine::kernels {

// ---- typed math: float math in float, double math in double ---------------------------------
// Unqualified exp(float) on the host resolves to the C function exp(double), which silently
// computes in double; the overloads at the end of this namespace pick float functions. exp, erf
// and tanh in f32 are our own, branch-free so that CPU loops over them vectorise (the libm calls
// are opaque to the vectoriser); f64 (gradcheck) and the GPU use the C library's functions.
namespace math {

// e^x in f32, written so that a CPU loop over it vectorises (libm's expf is an opaque call; this is
// most of the cost of sigmoid, exp and the gelu/erf/softplus gradients). On the GPU, expf.
//   x = n ln2 + r,  n = round(x / ln2),  |r| <~ ln2 / 2    (Cody-Waite: ln2 = hi + lo, n hi exact)
//   e^r = sum_{k <= 7} r^k / k!     (the Taylor remainder r^8 / 8! < 6e-9 is far below an ulp)
//   2^n from exponent bits, as 2^(n/2) 2^(n - n/2) so that subnormal results round only once.
// x is clamped to [-104, 89] first (e^x is 0 / inf in f32 beyond), NaN is returned as is.
// Accuracy: within 2 ulp of the exact value over the whole range (tests/test_elementwise.cpp).
ENGINE_HD float exp_f32(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  const float xc = x > 89.0f ? 89.0f : (x < -104.0f ? -104.0f : x);
  const float kShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the low bits
  const float t = xc * 1.44269504088896341f + kShift;
  const float n = t - kShift;
  const int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kShift);
  const float r = (xc - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t n1 = ni >> 1, n2 = ni - n1;  // each in [-75, 65]: a normal power of two
  const float y = p * std::bit_cast<float>((n1 + 127) << 23) * std::bit_cast<float>((n2 + 127) << 23);
  return x != x ? x : y;
#endif
}

// erf(x) in f32, vectorisable like exp_f32 (gelu's cost on the CPU); on the GPU, erff.
//   |x| < 1:       erf(x) = x P(x^2)
//   1 <= |x| <= 4: erf(|x|) = 1 - e^(-x^2) Q(t),  Q ~ erfcx(|x|) = erfc(|x|) e^(x^2),  t = (2|x| - 5) / 3
//   |x| > 4:       1 (1 - erfc(4) rounds to 1 in f32)
// P (degree 6 in x^2, relative error 1.4e-9) and Q (degree 12 in t, relative error 7.6e-9) are
// Chebyshev interpolants of erf(x)/x on x^2 in [0, 1] and of erfcx on [1, 4], computed in double
// from the C library's erf/erfc and converted to monomials (both well conditioned: the sum of
// |coefficients| is within 3.2x of the smallest value). Accuracy: within 2 ulp (tested).
ENGINE_HD float erf_f32(float x) {
#if defined(__CUDA_ARCH__)
  return ::erff(x);
#else
  const float a = x < 0.0f ? -x : x;
  const float u = a * a;
  float p = 7.8824971041058234e-05f;
  p = p * u - 0.00080188549911852647f;
  p = p * u + 0.0051893119425168166f;
  p = p * u - 0.026854328795967497f;
  p = p * u + 0.11283597463484307f;
  p = p * u - 0.37612626903579677f;
  p = p * u + 1.1283791658815021f;
  const float small = a * p;
  const float ac = a > 4.0f ? 4.0f : a;
  const float t = (2.0f * ac - 5.0f) * (1.0f / 3.0f);
  float q = 1.3819089044631028e-05f;
  q = q * t - 3.6928723456952639e-05f;
  q = q * t + 5.4947248082193312e-05f;
  q = q * t - 0.00014394859823818607f;
  q = q * t + 0.00041450809800402943f;
  q = q * t - 0.0010171177739206616f;
  q = q * t + 0.0024017016953760129f;
  q = q * t - 0.0055673329097209179f;
  q = q * t + 0.012489703671492311f;
  q = q * t - 0.027005725289698898f;
  q = q * t + 0.05611047258428363f;
  q = q * t - 0.1115210046953846f;
  q = q * t + 0.21080636427594099f;
  const float large = 1.0f - exp_f32(-(ac * ac)) * q;
  const float r = a < 1.0f ? small : large;
  const float y = x < 0.0f ? -r : r;
  return x != x ? x : y;
#endif
}

// tanh(x) in f32, vectorisable (gelu_tanh, tanh); on the GPU, tanhf.
//   |x| < 0.625:  tanh(x) = x R(x^2), R a degree-6 Chebyshev interpolant of tanh(x)/x on x^2 in
//                 [0, 0.390625] (relative error 1.5e-10; computed like erf_f32's P)
//   otherwise:    sign(x) (1 - 2 / (e^(2|x|) + 1))   (no cancellation: the result is >= 0.55)
// Accuracy: within 2 ulp (tested).
ENGINE_HD float tanh_f32(float x) {
#if defined(__CUDA_ARCH__)
  return ::tanhf(x);
#else
  const float a = x < 0.0f ? -x : x;
  const float u = a * a;
  float p = 0.0021303085480000004f;
  p = p * u - 0.0081612306921875002f;
  p = p * u + 0.021692755062713624f;
  p = p * u - 0.053944887843633077f;
  p = p * u + 0.13333184541012563f;
  p = p * u - 0.33333329757196861f;
  p = p * u + 0.99999999985910892f;
  const float small = a * p;
  const float large = 1.0f - 2.0f / (exp_f32(2.0f * a) + 1.0f);  // e^(2|x|) = inf gives 1
  const float r = a < 0.625f ? small : large;
  const float y = x < 0.0f ? -r : r;
  return x != x ? x : y;
#endif
}

// The overloads the functors call.
ENGINE_HD float exp(float x) { return exp_f32(x); }
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
ENGINE_HD float tanh(float x) { return tanh_f32(x); }
ENGINE_HD double tanh(double x) { return ::tanh(x); }
ENGINE_HD float erf(float x) { return erf_f32(x); }
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
// dst + alpha * src: the in-place add_ (optimizer updates, gradient accumulation).
struct AddScaledFn { double alpha; template <typename T> ENGINE_HD T operator()(T d, T s) const { return d + T(alpha) * s; } };
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
