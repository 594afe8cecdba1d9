// cudnn_conv.h (cuda): the three convolution primitives through cuDNN, the optional path behind
// the ConvAlgorithm policy (tensor/conv_algorithm.h; docs/cuda.md "cuDNN convolution"). The
// default path is im2col + cuBLASLt (tensor/cuda/conv.h); this one runs cuDNN's legacy API:
//
//   conv2d            cudnnConvolutionForward         y  = conv(x, w)        (+ bias)
//   conv_transpose2d  cudnnConvolutionBackwardData    x  = conv^T(gy, w)     (+ bias)
//   conv2d_weight     cudnnConvolutionBackwardFilter  dw = sum_n gy[n] * x[n]
//
// with the same cpu::ConvProblem as the im2col path: NCHW tensors, stride, padding, dilation,
// groups (cudnnSetConvolutionGroupCount; the batch-grouped modulated conv is groups = N on one
// sample of N*C channels), cross-correlation as in ops_conv.cpp. conv_transpose2d's output_padding
// needs nothing special: cuDNN's backward data takes the output size from the dx descriptor, and
// every H = (Ho-1)s - 2p + d(k-1) + op + 1 with 0 <= op < s gives back Ho under the conv2d size
// formula, so cuDNN accepts it and computes the exact adjoint, as ops_conv.cpp defines it.
// The bias (conv2d: per output channel; conv_transpose2d: per input channel) is written first by
// the im2col path's bias_fill kernel and cuDNN adds into it (beta = 1).
//
// Arithmetic (GemmMode from the matmul precision policy, tensor/precision.h):
//   f32   CUDNN_DATA_FLOAT, CUDNN_FMA_MATH: no tensor cores, so no TF32 rounding
//   tf32  CUDNN_DATA_FLOAT, CUDNN_TENSOR_OP_MATH: TF32 tensor cores allowed (never the f16
//         conversion of CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
//   f64   CUDNN_DATA_DOUBLE
//   bf16  not run here (returns false: the im2col path): the engine's bf16 mode is bf16 x bf16
//         with an f32 output and f32 bias/gradients, and cuDNN's bf16 configurations write bf16
//         outputs; rounding the output (or the weight gradient) to bf16 would change the result.
//
// Algorithms: from cudnnGetConvolution*Algorithm_v7 (heuristics, no timing runs, so the choice
// depends only on the GPU, the cuDNN version and the problem), the first one that is supported,
// reported deterministic, in the mode's math types, of the direct-sum kind (forward: implicit /
// precomputed-implicit / explicit GEMM, direct; backward data: ALGO_1; backward filter: ALGO_1 —
// no FFT or Winograd, whose rounding errors are not elementwise like a GEMM's, and never the
// nondeterministic BWD_DATA_ALGO_0 / BWD_FILTER_ALGO_0 / _3) and whose workspace is at most
// 256 MiB. The choice (or "none": then the im2col path runs) is cached per (device, direction,
// mode, problem shape). Results are bit-reproducible run to run on one GPU.
//
// One cuDNN handle per device, created on first use and bound to the device's compute stream;
// descriptors are created per call. The workspace is an arena block (empty() with
// Kind::workspace, charged to the calling op by the profiler), never cudaMalloc; it is released
// after the call is enqueued, which is safe because everything that can reuse it runs later on the
// same stream. A failing cuDNN call throws engine::Error naming the op, the shapes, the call and
// cudnnGetErrorString.
//
// Each function returns true when it ran the op, false (having done nothing) when cuDNN cannot run
// this problem as the engine defines it (bf16 mode, empty tensors, a tensor over 2^31 - 1
// elements, no acceptable algorithm): the caller then runs the im2col path. In a build without
// cuDNN (ENGINE_CUDNN=OFF, or the emulated device) each throws require_cudnn's error.
#pragma once
#include <cstdint>

#include "tensor/cpu/conv.h"
#include "tensor/cuda/gemm.h"
#include "tensor/tensor.h"

namespace engine::cuda {

// Same contracts as conv2d_forward / conv2d_input / conv2d_weight of tensor/cuda/conv.h: tensors
// contiguous on one CUDA device, outputs preallocated with the problem's shapes.
bool cudnn_conv2d_forward(const cpu::ConvProblem& p, GemmMode mode, const Tensor& x, const Tensor& w,
                          const Tensor& bias, const Tensor& y);
bool cudnn_conv2d_input(const cpu::ConvProblem& p, GemmMode mode, const Tensor& gy, const Tensor& w,
                        const Tensor& bias, const Tensor& x);
bool cudnn_conv2d_weight(const cpu::ConvProblem& p, GemmMode mode, const Tensor& x, const Tensor& gy,
                         const Tensor& gw);

// Problem configurations whose algorithm choice is cached, including the "no algorithm" ones
// (for tests; 0 without cuDNN).
int64_t cudnn_cached_algorithms();
// Op calls cuDNN has run so far in this process (for tests: the path was taken, not declined).
int64_t cudnn_conv_calls();

}  // namespace engine::cuda
