// softmax.h (cuda): softmax, log_softmax and cross_entropy (forward and fused first-order
// backward) on CUDA tensors, for tensor/ops_softmax.cpp and autograd/formulas/softmax.cpp. The
// callers check shapes and dtypes and allocate the outputs; these functions check the devices,
// build the line geometry and launch the kernels of softmax.cu (asynchronous, compute stream).
#pragma once
#include "tensor/tensor.h"

namespace engine::cuda {

// y = softmax(x, dim) or log_softmax(x, dim); x and y of the same shape, any strides.
void softmax_lines(const Tensor& y, const Tensor& x, int dim, bool log);
// dx = the softmax (log = false) or log_softmax (log = true) backward from g and the output y.
void softmax_backward_lines(const Tensor& dx, const Tensor& g, const Tensor& y, int dim, bool log);
// out (0-dim) = mean over rows of -log_softmax(logits)[r, target[r]]; logits [N, C], target i64
// [N] on the same device with every value already checked to lie in [0, C).
void cross_entropy(const Tensor& out, const Tensor& logits, const Tensor& target);
// dx (contiguous [N, C]) = (softmax(logits) - onehot(target)) * g * inv_n, g a one-element
// tensor on the device (read by the kernel, never by the host).
void cross_entropy_backward(const Tensor& dx, const Tensor& logits, const Tensor& target, const Tensor& g,
                            double inv_n);
// out (contiguous [N, C], zero-filled here) = onehot(target).
void one_hot_rows(const Tensor& out, const Tensor& target);

}  // namespace engine::cuda
