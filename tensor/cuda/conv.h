// conv.h (cuda): the three convolution primitives on a CUDA device, as im2col / col2im kernels
// (tensor/cuda/conv.cu, bodies in tensor/kernels/im2col.h) + the cuBLASLt GEMM (tensor/cuda/gemm.h).
// Same decomposition as the CPU (tensor/cpu/conv.h), per (sample, group) slice:
//
//   forward    y[n, g]  = W_g col(x[n, g])  (+ bias: the output is filled with it, the GEMM adds)
//   input      x[n, g]  = col2im(W_g^T y[n, g])  (+ bias, added by the col2im gather)
//   weight     dW_g     = sum_n gy[n, g] col(x[n, g])^T: the columns are laid out group-major
//                         [G, K, N*Ho*Wo] and gy permuted to [Cout, N, Ho*Wo], so the sum over
//                         samples is the k dimension of one GEMM per group (deterministic)
//
// The GEMMs of one launch run as a cuBLASLt strided batch: over the samples (the weight slice
// broadcast with batch stride 0) when there are at least as many samples as groups, else over the
// groups (StyleGAN2's batch-grouped modulated conv: N = 1 sample of N*C channels, groups = N).
// A 1x1 convolution with stride 1 and no padding uses x as its column matrix (no im2col).
// Column buffers come from the device arena (empty() with Kind::workspace, charged to the op by
// the profiler) and cover as many samples as fit in 256 MiB.
//
// Modes: f32 / tf32 / f64 on same-dtype tensors; bf16: x (or gy for the input gradient) and w
// are bf16 tensors, outputs and bias f32; im2col then moves bf16 values.
#pragma once
#include "tensor/cpu/conv.h"
#include "tensor/cuda/gemm.h"
#include "tensor/tensor.h"

namespace engine::cuda {

// All tensors contiguous on one CUDA device; outputs preallocated with the problem's shapes.
void conv2d_forward(const cpu::ConvProblem& p, GemmMode mode, const Tensor& x, const Tensor& w, const Tensor& bias,
                    const Tensor& y);
void conv2d_input(const cpu::ConvProblem& p, GemmMode mode, const Tensor& gy, const Tensor& w, const Tensor& bias,
                  const Tensor& x);
void conv2d_weight(const cpu::ConvProblem& p, GemmMode mode, const Tensor& x, const Tensor& gy, const Tensor& gw);

// The byte budget of one column buffer (default 256 MiB); returns the previous one. Tests lower it
// to run the chunked paths (one sample per chunk). Not thread-safe: set it before running convs.
int64_t set_column_budget(int64_t bytes);

// out [N, C, inner...] = bias[c] broadcast (linear's bias before its GEMM accumulates).
void bias_fill(const Tensor& out, const Tensor& bias, int64_t channels, int64_t inner);

}  // namespace engine::cuda
