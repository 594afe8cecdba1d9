// copy.h (cuda): the in-place writes of tensor.cpp on CUDA tensors: copy_ (any dtype pair,
// broadcast and strided operands), fill_, add_ (dst += alpha * src) and mul_ (dst *= value).
// Same semantics as the CPU paths in tensor.cpp, which dispatch here for CUDA destinations.
#pragma once
#include "tensor/tensor.h"

namespace engine::cuda {

void copy_(const Tensor& dst, const Tensor& src);
void fill_(const Tensor& dst, double value);
void add_(const Tensor& dst, const Tensor& src, double alpha);
void mul_(const Tensor& dst, double value);

}  // namespace engine::cuda
