// upfirdn.h (cuda): upfirdn2d's passes on CUDA tensors, the counterparts of tensor/cpu/upfirdn.h.
// x and out are contiguous stacks of planes of x's dtype (f32 or f64) on one device; w holds the
// correlation weights (tensor/ops_upfirdn.cpp) as a 1-D tensor of that dtype on the same device.
#pragma once
#include "tensor/kernels/upfirdn.h"
#include "tensor/tensor.h"

namespace engine::cuda {

void upfirdn2d_2d(const Tensor& x, const Tensor& out, int64_t planes, const kernels::UpFirDnGeometry& g,
                  const Tensor& w);
void upfirdn2d_pass_x(const Tensor& x, const Tensor& out, int64_t rows, int64_t W, int64_t Wo, const Tensor& w,
                      int64_t up, int64_t down, int64_t pad0);
void upfirdn2d_pass_y(const Tensor& x, const Tensor& out, int64_t planes, int64_t H, int64_t Ho, int64_t W,
                      const Tensor& w, int64_t up, int64_t down, int64_t pad0);

}  // namespace engine::cuda
