// deform.h (cuda): deform_conv2d's forward and backward on CUDA tensors (kernels in deform.cu).
// Every tensor is contiguous, f32 or f64, on one device, with the shapes of deform_launch.h
// (checked by tensor/ops_deform.cpp); undefined bias / mask mean none; undefined gradient
// outputs are not computed. grad_x must be zero-filled (accumulated atomically).
#pragma once
#include "tensor/cuda/deform_launch.h"
#include "tensor/tensor.h"

namespace engine::cuda {

void deform_conv2d_forward(const DeformConvShape& s, const Tensor& x, const Tensor& offset, const Tensor& weight,
                           const Tensor& bias, const Tensor& mask, const Tensor& out);

void deform_conv2d_backward(const DeformConvShape& s, const Tensor& grad_out, const Tensor& x, const Tensor& offset,
                            const Tensor& weight, const Tensor& mask, const Tensor& grad_x, const Tensor& grad_offset,
                            const Tensor& grad_weight, const Tensor& grad_bias, const Tensor& grad_mask);

}  // namespace engine::cuda
