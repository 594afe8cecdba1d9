// elementwise.h (cuda): apply a portable functor of tensor/kernels/elementwise.h over 1 or 2
// broadcast, strided CUDA operands. Same contract as tensor/cpu/elementwise.h, so the op layer
// picks the backend with one branch and shares everything else (shape inference, checks, the
// output allocation, autograd):
//
//   template <typename F>
//   Tensor binary_float(const char* name, const Tensor& a, const Tensor& b, F f) {
//     check_same(name, a, b);            // same dtype and same device
//     check_floating(name, a);
//     Tensor out = empty(broadcast_shapes(a.sizes(), b.sizes(), name), opts(a.dtype(), a.device()));
//     dispatch_floating(a.dtype(), name, [&](auto zero) {
//       using T = decltype(zero);
//       if (a.device().is_cuda()) cuda::map_binary<T, T>(out, a, b, f);
//       else cpu::map_binary<T, T>(out, a, b, f);
//     });
//     return out;
//   }
//
// (ops_elementwise.cpp is not wired yet; today its check_cpu() rejects CUDA tensors.)
//
// The kernels are compiled by nvcc in elementwise.cu, which explicitly instantiates the
// launchers for every (dtype, functor) pair listed there: f32 and f64 with AddFn, SubFn, MulFn,
// DivFn (binary) and NegFn, ExpFn, LogFn, AddScalarFn, MulScalarFn, RSubScalarFn, RDivScalarFn
// (unary). Using another functor here compiles but fails to link with an undefined
// launch_map_binary / launch_map_unary: add it to the list at the end of elementwise.cu.
//
// Launches are asynchronous on the device's compute stream (device.h).
#pragma once
#include <array>

#include "tensor/cuda/device.h"
#include "tensor/cuda/elementwise_launch.h"
#include "tensor/cuda/strided.h"
#include "tensor/tensor.h"

namespace engine::cuda {

// The coalesced geometry of `shape` for operands with the given (already broadcast) strides,
// operand 0 being the output; no checks. Instantiated for N = 2 and 3.
template <int N>
StridedGeometry<N> strided_geometry(const Dims& shape, const std::array<Dims, N>& strides);

// Geometry of `out` and the inputs broadcast to out's shape, coalesced like the CPU loop.
// Checks (engine::Error naming `op`): every tensor is on out's CUDA device, out's dtype is
// `out_dtype`, each input's dtype is `in_dtype`, each input broadcasts to out's shape.
StridedGeometry<2> unary_geometry(const char* op, const Tensor& out, const Tensor& x, DType out_dtype,
                                  DType in_dtype);
StridedGeometry<3> binary_geometry(const char* op, const Tensor& out, const Tensor& x, const Tensor& y,
                                   DType out_dtype, DType in_dtype);

// The C++ element type -> DType (float, double).
template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::f32; }
template <>
constexpr DType dtype_of<double>() { return DType::f64; }

// out[i] = f(x[i]); x broadcast to out's shape. `out` is written in place (any strides).
template <typename OutT, typename InT, typename F>
void map_unary(const Tensor& out, const Tensor& x, F f) {
  const StridedGeometry<2> g = unary_geometry("cuda::map_unary", out, x, dtype_of<OutT>(), dtype_of<InT>());
  if (g.numel == 0) return;
  DeviceGuard guard(out.device());
  launch_map_unary<OutT, InT, F>(g, out.data<OutT>(), x.data<InT>(), f, compute_stream(out.device()));
}

// out[i] = f(x[i], y[i]); x and y broadcast to out's shape.
template <typename OutT, typename InT, typename F>
void map_binary(const Tensor& out, const Tensor& x, const Tensor& y, F f) {
  const StridedGeometry<3> g =
      binary_geometry("cuda::map_binary", out, x, y, dtype_of<OutT>(), dtype_of<InT>());
  if (g.numel == 0) return;
  DeviceGuard guard(out.device());
  launch_map_binary<OutT, InT, F>(g, out.data<OutT>(), x.data<InT>(), y.data<InT>(), f,
                                  compute_stream(out.device()));
}

}  // namespace engine::cuda
