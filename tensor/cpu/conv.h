// conv.h (cpu): the three convolution primitives on the CPU, as im2col + GEMM per (sample, group).
//
//   forward    y[n, g]  = W_g col(x[n, g])                     (+ bias)
//   input      x[n, g]  = col2im(W_g^T y[n, g])                 (conv_transpose2d, + bias)
//   weight     dW_g     = sum_n gy[n, g] col(x[n, g])^T         (conv2d_weight)
// with W_g the [Cout/G, Cin/G * kh * kw] rows of group g, col() the im2col matrix of
// tensor/kernels/im2col.h. A 1x1 convolution with stride 1 and no padding has col(x) = x: it is a
// plain GEMM on the input, with no im2col buffer.
//
// Cache blocking: the column matrix of one image is produced in blocks of output rows of at most
// 256 KB (im2col of the block, then the GEMM on it while it is still in L2; for the input gradient
// the GEMM's block, then col2im of it). Per-thread buffers hold one block, not one image.
//
// Parallelism (see tensor/cpu/gemm.h): forward tasks are (sample, group, row block), input-
// gradient tasks (sample, group) (neighbouring row blocks overlap in x); each task is one GEMM
// per block over the full K, on one thread. With fewer than 8 tasks and large GEMMs, images go
// one after another with im2col / col2im and the GEMM (in tiles of C) spread over the threads.
// The weight gradient sums over samples: the batch is cut into up to 8 chunks, each task
// (chunk, group) accumulates its samples and blocks in order into a partial gradient, and the
// partials are added in chunk order; with one sample per group (StyleGAN2's batch-grouped
// modulated conv) the groups are the tasks. Plans depend only on the sizes, so no result depends
// on the thread count.
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
// im2col of output rows [oh_a, oh_b) only: col [C*kh*kw, (oh_b - oh_a)*Wo] with row stride ld.
template <typename T>
void im2col_rows(const T* x, const kernels::ConvShape& s, int64_t oh_a, int64_t oh_b, T* col, int64_t ld,
                 bool parallel);

}  // namespace engine::cpu
