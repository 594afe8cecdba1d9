// conv_launch.h (cuda): declarations of the convolution kernels (im2col, col2im, bias), shared by
// conv.cu (nvcc: definitions + explicit instantiations) and conv.cpp (g++: the Tensor-level
// side). Plain types only. The index math is tensor/kernels/im2col.h, the same bodies the CPU
// loops use.
//
// Buffers are laid out per (sample, group) slice, in the order of the tensors: x [N, G*C, H, W]
// has slice (n, g) at x + (n*G + g) * C*H*W, the column buffer [slices, C*kh*kw, Ho*Wo].
#pragma once
#include <cstdint>

#include "tensor/cuda/device.h"
#include "tensor/kernels/im2col.h"

namespace engine::cuda {

// col[sl, r, q] = im2col_element(x + sl*C*H*W, s, r, q) for `slices` consecutive slices.
// T: float, double, uint16_t (bf16 bits: the zero of the padding is +0.0 in bf16 too).
template <typename T>
void launch_im2col(const kernels::ConvShape& s, int64_t slices, const T* x, T* col, Stream stream);

// The same column elements for `samples` samples of `groups` groups, laid out group-major
// [groups, C*kh*kw, samples, Ho*Wo]: for each group one [K, samples*Ho*Wo] matrix, so the weight
// gradient sums over the samples inside one GEMM (its k dimension) instead of one GEMM per sample.
template <typename T>
void launch_im2col_group_major(const kernels::ConvShape& s, int64_t samples, int64_t groups, const T* x, T* col,
                               Stream stream);

// x[sl, c, h, w] = col2im_element(col + sl*K*P, P, s, (c, h, w)) (+ bias[(sl % groups)*C + c]
// when bias is not null), a gather: every x element written once, no atomics, no zero fill.
template <typename T>
void launch_col2im(const kernels::ConvShape& s, int64_t slices, int64_t groups, const T* col, const T* bias, T* x,
                   Stream stream);

// out[i] = bias[(i / inner) % channels] for i in [0, count): the bias broadcast over an [N, C,
// inner] output before a GEMM adds the product to it (beta = 1).
template <typename T>
void launch_bias_fill(int64_t count, int64_t channels, int64_t inner, const T* bias, T* out, Stream stream);

}  // namespace engine::cuda
