// elementwise.h: portable bodies of the elementwise ops (forward and the pointwise pieces of
// their backward). Each functor maps scalars to a scalar; the CPU loops (tensor/cpu/elementwise.h)
// and the CUDA kernels apply them over broadcast, strided operands.
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

// ---- binary ----
struct AddFn { template <typename T> ENGINE_HD T operator()(T a, T b) const { return a + b; } };
struct SubFn { template <typename T> ENGINE_HD T operator()(T a, T b) const { return a - b; } };
struct MulFn { template <typename T> ENGINE_HD T operator()(T a, T b) const { return a * b; } };
struct DivFn { template <typename T> ENGINE_HD T operator()(T a, T b) const { return a / b; } };

// ---- with a scalar ----
struct AddScalarFn { double s; template <typename T> ENGINE_HD T operator()(T x) const { return x + T(s); } };
struct MulScalarFn { double s; template <typename T> ENGINE_HD T operator()(T x) const { return x * T(s); } };
struct RSubScalarFn { double s; template <typename T> ENGINE_HD T operator()(T x) const { return T(s) - x; } };
struct RDivScalarFn { double s; template <typename T> ENGINE_HD T operator()(T x) const { return T(s) / x; } };

// ---- unary ----
struct NegFn { template <typename T> ENGINE_HD T operator()(T x) const { return -x; } };
struct ExpFn { template <typename T> ENGINE_HD T operator()(T x) const { return exp(x); } };
struct LogFn { template <typename T> ENGINE_HD T operator()(T x) const { return log(x); } };

}  // namespace engine::kernels
