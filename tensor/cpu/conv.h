// conv.h (cpu): the three convolution primitives on the CPU, as im2col + GEMM per (sample, group).
//
//   forward    y[n, g]  = W_g col(x[n, g])                     (+ bias)
//   input      x[n, g]  = col2im(W_g^T y[n, g])                 (conv_transpose2d, + bias)
//   weight     dW_g     = sum_n gy[n, g] col(x[n, g])^T         (conv2d_weight)
// with W_g the [Cout/G, Cin/G * kh * kw] rows of group g, col() the im2col matrix of
// tensor/kernels/im2col.h. A 1x1 convolution with stride 1 and no padding has col(x) = x: it is a
// plain GEMM on the input, with no im2col buffer.
//
// Parallelism (see tensor/cpu/gemm.h): the (sample, group) GEMMs run in parallel over OpenMP
// threads when they are small, one per thread with its own column buffer; large ones run one
// after another with BLAS's threads and a parallel im2col. The weight gradient sums over samples
// inside one GEMM (the samples' columns side by side, K = samples * Ho * Wo) or, with a single
// sample per group (StyleGAN2's batch-grouped modulated conv), runs the groups as the items.
// No result depends on the thread count.
//
// Buffers come from empty() with Kind::workspace, so the memory profiler charges them to the op
// as transient bytes.
#pragma once
#include <cstdint>

#include "tensor/dtype.h"
#include "tensor/kernels/im2col.h"

namespace engine::cpu {

struct ConvProblem {
  int64_t batch = 1, groups = 1;
  int64_t in_channels = 0, out_channels = 0;  // totals over groups
  kernels::ConvShape shape;                   // one group (shape.channels = in_channels / groups)
  DType dtype = DType::f32;
};

// All pointers are to contiguous tensors: x [N, Cin, H, W], w [Cout, Cin/G, kh, kw],
// y [N, Cout, Ho, Wo]; bias (may be null) [Cout] for forward, [Cin] for input.
template <typename T>
void conv2d_forward(const ConvProblem& p, const T* x, const T* w, const T* bias, T* y);
template <typename T>
void conv2d_input(const ConvProblem& p, const T* y, const T* w, const T* bias, T* x);
template <typename T>
void conv2d_weight(const ConvProblem& p, const T* x, const T* gy, T* gw);

// im2col of one image slice into col [C*kh*kw, Ho*Wo] with row stride ld (>= Ho*Wo), and its
// adjoint col2im (x = col2im(col), overwriting x). `parallel` spreads rows/channels over threads.
template <typename T>
void im2col(const T* x, const kernels::ConvShape& s, T* col, int64_t ld, bool parallel);
template <typename T>
void col2im(const T* col, int64_t ld, const kernels::ConvShape& s, T* x, bool parallel);

}  // namespace engine::cpu
