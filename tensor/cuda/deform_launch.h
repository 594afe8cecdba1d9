// deform_launch.h (cuda): deform_conv2d launchers (deform.cu), plain types only. All buffers are
// contiguous and batched: x [N, Cin, H, W], offset [N, 2*G*K, Ho, Wo], mask [N, G*K, Ho, Wo] (null:
// no mask), weight [Cout, Cin/groups, kh, kw], bias [Cout] (null: none), out / grad_out
// [N, Cout, Ho, Wo]; K = kh*kw taps, G offset groups.
#pragma once
#include <cstdint>

#include "tensor/cuda/device.h"
#include "tensor/kernels/deform.h"

namespace engine::cuda {

struct DeformConvShape {
  kernels::DeformGeometry g;
  int64_t N = 0, Cin = 0, Cout = 0, groups = 1;
};

template <typename T>
struct DeformConvArgs {
  const T* x = nullptr;
  const T* offset = nullptr;
  const T* mask = nullptr;
  const T* weight = nullptr;
  const T* bias = nullptr;
  const T* grad_out = nullptr;
};

// out[n, o, p] = bias[o] + sum_{c in group(o), k} W[o, c, k] * m * bilinear(x[n, c], pos(n, k, p)).
template <typename T>
void launch_deform_forward(const DeformConvShape& s, const DeformConvArgs<T>& a, T* out, Stream stream);

// The gradients (each may be null: not needed). grad_x must hold zeros (it is accumulated into
// atomically); the others are overwritten.
template <typename T>
void launch_deform_backward(const DeformConvShape& s, const DeformConvArgs<T>& a, T* grad_x, T* grad_offset,
                            T* grad_weight, T* grad_bias, T* grad_mask, Stream stream);

}  // namespace engine::cuda
