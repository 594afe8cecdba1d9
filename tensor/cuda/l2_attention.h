// l2_attention.h (cuda): the fused L2 attention on CUDA tensors (kernels in l2_attention.cu), with
// the contract of tensor/cpu/l2_attention.h: q, k, v with the strides in the geometry (read in
// place), out / grad_out / lse / dq / dk / dv contiguous, undefined gradients not computed.
#pragma once
#include "tensor/kernels/l2_attention.h"
#include "tensor/tensor.h"

namespace engine::cuda {

void l2_attention_forward(const kernels::L2AttnGeom& g, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse);

void l2_attention_backward(const kernels::L2AttnGeom& g, const Tensor& grad_out, const Tensor& q, const Tensor& k,
                           const Tensor& v, const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                           const Tensor& dv);

}  // namespace engine::cuda
