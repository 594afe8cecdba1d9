// norm.h (cuda): layer_norm and group_norm (forward, fused first-order backward) on CUDA tensors,
// for tensor/ops_norm.cpp and autograd/formulas/norm.cpp. The callers check the shapes and make
// every operand contiguous; these functions check the devices and launch norm.cu's kernels
// (asynchronous, compute stream). Shapes: NormShape (norm_launch.h).
#pragma once
#include "tensor/cuda/norm_launch.h"
#include "tensor/tensor.h"

namespace engine::cuda {

// y = normalised x (* w + b; w, b may be undefined); mean, rstd: f64 [rows] statistics written
// for the backward.
void norm_forward(const NormShape& s, const Tensor& y, const Tensor& mean, const Tensor& rstd, const Tensor& x,
                  const Tensor& w, const Tensor& b);

// The gradients that are defined among dx, dw, db (layer = layer_norm's column sums, else
// group_norm's per-channel sums) from g, x, w (may be undefined) and the forward's statistics.
void norm_backward(const NormShape& s, bool layer, const Tensor& dx, const Tensor& dw, const Tensor& db,
                   const Tensor& g, const Tensor& x, const Tensor& w, const Tensor& mean, const Tensor& rstd);

}  // namespace engine::cuda
