// upfirdn.h (cpu): the CPU loops of upfirdn2d over the per-pixel math in tensor/kernels/upfirdn.h.
//
// Inputs and outputs are contiguous stacks of [H, W] planes (N*C of them). The weights are the
// correlation weights (the caller's filter flipped and scaled by the gain). Every output element
// is written by exactly one loop iteration, so results do not depend on the thread count.
//
//   upfirdn2d_2d:     the 2-D (non-separable) filter, [kh, kw] weights, both axes at once.
//   upfirdn2d_pass_x: one axis of a separable filter along x (rows of length W -> Wo).
//   upfirdn2d_pass_y: one axis of a separable filter along y (planes of H rows -> Ho rows).
#pragma once
#include <cstdint>

#include "tensor/kernels/upfirdn.h"

namespace engine::cpu {

template <typename T>
void upfirdn2d_2d(const T* x, T* out, int64_t planes, const kernels::UpFirDnGeometry& g, const T* w);

template <typename T>
void upfirdn2d_pass_x(const T* x, T* out, int64_t rows, int64_t W, int64_t Wo, const T* w, int64_t taps,
                      int64_t up, int64_t down, int64_t pad0);

template <typename T>
void upfirdn2d_pass_y(const T* x, T* out, int64_t planes, int64_t H, int64_t Ho, int64_t W, const T* w,
                      int64_t taps, int64_t up, int64_t down, int64_t pad0);

}  // namespace engine::cpu
