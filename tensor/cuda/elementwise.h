// elementwise.h (cuda): apply a portable functor of tensor/kernels/elementwise.h over 1, 2 or 3
// broadcast, strided CUDA operands. Same contract as tensor/cpu/elementwise.h, so the op layer
// picks the backend with one branch and shares everything else (shape inference, checks, the
// output allocation, autograd):
//
//   dispatch_floating(a.dtype(), name, [&](auto zero) {
//     using T = decltype(zero);
//     if (use_cuda(name, a)) cuda::map_binary<T, T>(out, a, b, f);
//     else cpu::map_binary<T, T>(out, a, b, f);
//   });
//
// The kernels are templates defined in elementwise.cu and explicitly instantiated there for every
// (element types, functor) the engine uses: a missing one is a link error naming it
// (`launch_map_binary<float, float, kernels::NewFn>`), never a silent fallback.
#pragma once
#include <array>
#include <cstdint>

#include "tensor/cuda/device.h"
#include "tensor/cuda/elementwise_launch.h"
#include "tensor/cuda/strided.h"
#include "tensor/tensor.h"

namespace engine::cuda {

// The coalesced geometry of operands (operand 0 = the output) over `shape` (elementwise.cpp).
template <int N>
StridedGeometry<N> strided_geometry(const Dims& shape, const std::array<Dims, N>& strides);

// Checks (device, broadcastability, no stride-0 output dims) and the geometry of out = f(inputs).
// `dtype_ok[k]` says whether operand k has the element type the kernel was instantiated for.
template <int N>
StridedGeometry<N> elementwise_geometry(const char* op, const Tensor& out,
                                        const std::array<const Tensor*, N - 1>& inputs,
                                        const std::array<bool, N>& dtype_ok);

// Whether a tensor of dtype `d` stores elements of C++ type T (bool tensors are uint8_t storage).
template <typename T>
constexpr bool holds(DType d) {
  if constexpr (std::is_same_v<T, float>) return d == DType::f32;
  else if constexpr (std::is_same_v<T, double>) return d == DType::f64;
  else if constexpr (std::is_same_v<T, int32_t>) return d == DType::i32;
  else if constexpr (std::is_same_v<T, int64_t>) return d == DType::i64;
  else if constexpr (std::is_same_v<T, uint8_t>) return d == DType::u8 || d == DType::boolean;
  else if constexpr (std::is_same_v<T, uint16_t>) return d == DType::bf16 || d == DType::f16;
  else return false;
}

template <typename OutT, typename InT, typename F>
void map_unary(const Tensor& out, const Tensor& x, F f) {
  const StridedGeometry<2> g = elementwise_geometry<2>("cuda::map_unary", out, {&x},
                                                       {holds<OutT>(out.dtype()), holds<InT>(x.dtype())});
  if (g.numel == 0) return;
  DeviceGuard guard(out.device());
  launch_map_unary<OutT, InT, F>(g, out.data<OutT>(), x.data<InT>(), f, compute_stream(out.device()));
}

template <typename OutT, typename InT, typename F>
void map_binary(const Tensor& out, const Tensor& x, const Tensor& y, F f) {
  const StridedGeometry<3> g = elementwise_geometry<3>(
      "cuda::map_binary", out, {&x, &y}, {holds<OutT>(out.dtype()), holds<InT>(x.dtype()), holds<InT>(y.dtype())});
  if (g.numel == 0) return;
  DeviceGuard guard(out.device());
  launch_map_binary<OutT, InT, F>(g, out.data<OutT>(), x.data<InT>(), y.data<InT>(), f,
                                  compute_stream(out.device()));
}

template <typename OutT, typename AT, typename BT, typename CT, typename F>
void map_ternary(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& c, F f) {
  const StridedGeometry<4> g = elementwise_geometry<4>(
      "cuda::map_ternary", out, {&a, &b, &c},
      {holds<OutT>(out.dtype()), holds<AT>(a.dtype()), holds<BT>(b.dtype()), holds<CT>(c.dtype())});
  if (g.numel == 0) return;
  DeviceGuard guard(out.device());
  launch_map_ternary<OutT, AT, BT, CT, F>(g, out.data<OutT>(), a.data<AT>(), b.data<BT>(), c.data<CT>(), f,
                                          compute_stream(out.device()));
}

}  // namespace engine::cuda
