// upfirdn_launch.h (cuda): declarations of the upfirdn2d launchers (upfirdn.cu), plain types only.
// Inputs and outputs are contiguous stacks of [H, W] planes; w are the correlation weights (the
// filter flipped and scaled, see tensor/ops_upfirdn.cpp) in device memory.
#pragma once
#include <cstdint>

#include "tensor/cuda/device.h"
#include "tensor/kernels/upfirdn.h"

namespace engine::cuda {

// The 2-D (non-separable) filter: one thread per output pixel of planes x [Ho, Wo].
template <typename T>
void launch_upfirdn2d_2d(const T* x, T* out, int64_t planes, const kernels::UpFirDnGeometry& g, const T* w,
                         Stream stream);
// One axis of a separable filter along x: rows of length W -> Wo.
template <typename T>
void launch_upfirdn2d_pass_x(const T* x, T* out, int64_t rows, int64_t W, int64_t Wo, const T* w, int64_t taps,
                             int64_t up, int64_t down, int64_t pad0, Stream stream);
// One axis of a separable filter along y: planes of H rows (of W) -> Ho rows.
template <typename T>
void launch_upfirdn2d_pass_y(const T* x, T* out, int64_t planes, int64_t H, int64_t Ho, int64_t W, const T* w,
                             int64_t taps, int64_t up, int64_t down, int64_t pad0, Stream stream);

}  // namespace engine::cuda
