// elementwise.h (cpu): apply a portable functor over 1, 2 or 3 broadcast operands into a fresh
// contiguous output. The output shape is the broadcast of the inputs' shapes.
#pragma once
#include "tensor/cpu/loops.h"
#include "tensor/dispatch.h"
#include "tensor/tensor.h"

namespace engine::cpu {

// out[i] = f(x[i]); out has x's shape, dtype OutT.
template <typename OutT, typename InT, typename F>
void map_unary(const Tensor& out, const Tensor& x, F f) {
  OutT* o = out.data<OutT>();
  const InT* a = x.data<InT>();
  for_each_strided<2>(out.sizes(), {out.strides(), broadcast_strides(x, out.sizes())},
                      [&](const std::array<int64_t, 2>& off) { o[off[0]] = OutT(f(a[off[1]])); });
}

template <typename OutT, typename InT, typename F>
void map_binary(const Tensor& out, const Tensor& x, const Tensor& y, F f) {
  OutT* o = out.data<OutT>();
  const InT* a = x.data<InT>();
  const InT* b = y.data<InT>();
  for_each_strided<3>(out.sizes(),
                      {out.strides(), broadcast_strides(x, out.sizes()), broadcast_strides(y, out.sizes())},
                      [&](const std::array<int64_t, 3>& off) { o[off[0]] = OutT(f(a[off[1]], b[off[2]])); });
}

// Ternary with a u8/bool first operand (where) or three same-type operands.
template <typename OutT, typename AT, typename BT, typename CT, typename F>
void map_ternary(const Tensor& out, const Tensor& x, const Tensor& y, const Tensor& z, F f) {
  OutT* o = out.data<OutT>();
  const AT* a = x.data<AT>();
  const BT* b = y.data<BT>();
  const CT* c = z.data<CT>();
  for_each_strided<4>(out.sizes(),
                      {out.strides(), broadcast_strides(x, out.sizes()), broadcast_strides(y, out.sizes()),
                       broadcast_strides(z, out.sizes())},
                      [&](const std::array<int64_t, 4>& off) { o[off[0]] = OutT(f(a[off[1]], b[off[2]], c[off[3]])); });
}

}  // namespace engine::cpu
