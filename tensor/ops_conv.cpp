// ops_conv.cpp: the three convolution primitives (Note [conv as three differentiable
// primitives] in tensor/ops.h), as im2col + GEMM on the CPU (tensor/cpu/conv.h, index math in
// tensor/kernels/im2col.h, backward formulas in autograd/formulas/conv.cpp).
//
//   conv2d(x, w, b):                  y[n, o, oh, ow] = b[o] + sum_{c in group(o), i, j}
//                                        w[o, c, i, j] x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
//   conv_transpose2d(y, w, b, op):    the adjoint of conv2d in x: <conv2d(x, w), y> = <x, conv_transpose2d(y, w)>,
//                                     plus b per output (= conv2d input) channel
//   conv2d_weight(x, gy, kh, kw):     the adjoint of conv2d in w: <conv2d(x, w), gy> = <w, conv2d_weight(x, gy)>
//
// Sizes: Ho = floor((H + 2p - d(k-1) - 1) / s) + 1; conv_transpose2d maps Ho back to
// H = (Ho-1)s - 2p + d(k-1) + output_padding + 1 with 0 <= output_padding < s (every H that
// gives Ho, and only those: so the transpose stays the exact adjoint of a conv2d).
// Inputs are made contiguous first (outside autograd: the Node is recorded on the original).
//
// CUDA tensors run the same decomposition with im2col / col2im kernels and cuBLASLt GEMMs
// (tensor/cuda/conv.h). Precision (tensor/precision.h): with f32 inputs under the bf16 policy, or
// any bf16 input, the two GEMM operands go through to_dtype(bf16) first (recorded: the Node saves
// the bf16 copies) and the GEMMs multiply bf16 values with f32 accumulation into f32 outputs; the
// bias stays f32. On the CPU the bf16 values are widened to f32 (exactly) for the f32 kernels.
//
// Under ConvAlgorithm::cudnn (tensor/conv_algorithm.h) CUDA tensors go through cuDNN instead
// (tensor/cuda/cudnn_conv.h), which declines the problems it cannot run as defined here (bf16
// arithmetic among them): those run the im2col path. CPU tensors ignore the policy.
#include <limits>

#include "autograd/formulas/conv.h"
#include "autograd/grad_mode.h"
#include "tensor/conv_algorithm.h"
#include "tensor/cpu/conv.h"
#include "tensor/dispatch.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"
#include "tensor/precision.h"

#if ENGINE_WITH_CUDA
#include "tensor/cuda/conv.h"
#include "tensor/cuda/cudnn_conv.h"
#endif

namespace engine {

namespace F = autograd::formulas;

namespace {

void check_params(const char* op, const Conv2dParams& p) {
  ENGINE_CHECK(p.stride_h >= 1 && p.stride_w >= 1, "{}: stride must be >= 1, got ({}, {})", op, p.stride_h,
               p.stride_w);
  ENGINE_CHECK(p.dilation_h >= 1 && p.dilation_w >= 1, "{}: dilation must be >= 1, got ({}, {})", op, p.dilation_h,
               p.dilation_w);
  ENGINE_CHECK(p.pad_h >= 0 && p.pad_w >= 0, "{}: padding must be >= 0, got ({}, {})", op, p.pad_h, p.pad_w);
  ENGINE_CHECK(p.groups >= 1, "{}: groups must be >= 1, got {}", op, p.groups);
}

void check_tensor(const char* op, const char* what, const Tensor& t, int dims) {
  ENGINE_CHECK(t.defined(), "{}: {} is undefined", op, what);
  ENGINE_CHECK(t.dim() == dims, "{}: {} must be {}-D, got shape {}", op, what, dims, t.sizes().str());
}

// The weight [Cout, Cin/groups, kh, kw] against the channel counts and groups.
void check_weight(const char* op, const Tensor& w, int64_t in_channels, int64_t groups) {
  const int64_t cout = w.size(0);
  ENGINE_CHECK(in_channels % groups == 0, "{}: {} input channels are not divisible by groups = {}", op, in_channels,
               groups);
  ENGINE_CHECK(cout % groups == 0, "{}: {} output channels (weight {}) are not divisible by groups = {}", op, cout,
               w.sizes().str(), groups);
  ENGINE_CHECK(w.size(1) * groups == in_channels,
               "{}: weight {} expects {} input channels ({} per group x {} groups), got {}", op, w.sizes().str(),
               w.size(1) * groups, w.size(1), groups, in_channels);
}

void check_bias(const char* op, const Tensor& bias, const Tensor& like, int64_t channels, DType out_dtype) {
  if (!bias.defined()) return;
  ENGINE_CHECK(bias.device() == like.device(), "{}: device mismatch, {} vs {} (bias)", op, like.device().str(),
               bias.device().str());
  ENGINE_CHECK(bias.dtype() == out_dtype, "{}: bias dtype {} does not match the output dtype {}", op,
               dtype_name(bias.dtype()), dtype_name(out_dtype));
  ENGINE_CHECK(bias.dim() == 1 && bias.size(0) == channels, "{}: bias shape {} does not match {} channels", op,
               bias.sizes().str(), channels);
}

// Contiguous data for the kernels, copied outside autograd (the op records its Node itself).
Tensor dense(const Tensor& t) {
  if (!t.defined() || t.is_contiguous()) return t;
  autograd::NoGradGuard no_grad;
  return contiguous(t);
}

// The arithmetic of the op's GEMMs (checks the two operands' dtypes and devices).
GemmArith arith_of(const char* op, const Tensor& a, const Tensor& b) {
  ENGINE_CHECK(a.device() == b.device(), "{}: device mismatch, {} vs {}", op, a.device().str(), b.device().str());
  return gemm_arith(op, a.dtype(), b.dtype());
}
DType out_dtype_of(GemmArith arith) { return arith == GemmArith::f64 ? DType::f64 : DType::f32; }
// The GEMM operand as the Node sees it: its bf16 copy (recorded) under bf16 arithmetic.
Tensor gemm_operand(const Tensor& t, GemmArith arith) {
  return arith == GemmArith::bf16 ? to_dtype(t, DType::bf16) : t;
}
// The CPU kernels read f32 widenings of bf16 data (exact), contiguous.
Tensor cpu_ready(const Tensor& t) {
  if (!t.defined() || t.dtype() != DType::bf16) return t;
  autograd::NoGradGuard no_grad;
  return to_dtype(t, DType::f32);
}

cpu::ConvProblem make_problem(int64_t n, int64_t cin, int64_t h, int64_t w, int64_t cout, int64_t kh, int64_t kw,
                              int64_t ho, int64_t wo, const Conv2dParams& p, DType dtype, const char* op) {
  cpu::ConvProblem pr;
  pr.batch = n;
  pr.groups = p.groups;
  pr.in_channels = cin;
  pr.out_channels = cout;
  pr.dtype = dtype;
  kernels::ConvShape& s = pr.shape;
  s.channels = cin / p.groups;
  s.height = h;
  s.width = w;
  s.kernel_h = kh;
  s.kernel_w = kw;
  s.out_h = ho;
  s.out_w = wo;
  s.stride_h = p.stride_h;
  s.stride_w = p.stride_w;
  s.pad_h = p.pad_h;
  s.pad_w = p.pad_w;
  s.dilation_h = p.dilation_h;
  s.dilation_w = p.dilation_w;
  // The GEMMs take 32-bit sizes: the largest dimension any of them sees is one image's column
  // matrix (rows or columns) or a weight-gradient chunk, all bounded by these products.
  const int64_t lim = std::numeric_limits<int32_t>::max();
  ENGINE_CHECK(s.channels * kh * kw <= lim && ho * wo <= lim && h * w <= lim && cout <= lim,
               "{}: problem too large for 32-bit BLAS sizes (Cin/groups*kh*kw = {}, Ho*Wo = {})", op,
               s.channels * kh * kw, ho * wo);
  return pr;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p) {
  ENGINE_OP("conv2d", x, weight, bias);
  check_tensor("conv2d", "input", x, 4);
  check_tensor("conv2d", "weight", weight, 4);
  const GemmArith arith = arith_of("conv2d", x, weight);
  check_params("conv2d", p);
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t cout = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  check_weight("conv2d", weight, cin, p.groups);
  check_bias("conv2d", bias, x, cout, out_dtype_of(arith));
  const int64_t ho = kernels::conv_out_size(h, kh, p.stride_h, p.pad_h, p.dilation_h);
  const int64_t wo = kernels::conv_out_size(w, kw, p.stride_w, p.pad_w, p.dilation_w);
  ENGINE_CHECK(h + 2 * p.pad_h >= p.dilation_h * (kh - 1) + 1 && w + 2 * p.pad_w >= p.dilation_w * (kw - 1) + 1,
               "conv2d: kernel {}x{} (dilation {}x{}) is larger than the padded input {}x{} (input {}, padding {}x{})",
               kh, kw, p.dilation_h, p.dilation_w, h + 2 * p.pad_h, w + 2 * p.pad_w, x.sizes().str(), p.pad_h,
               p.pad_w);
  const DType out_dtype = out_dtype_of(arith);
  const cpu::ConvProblem pr = make_problem(n, cin, h, w, cout, kh, kw, ho, wo, p, out_dtype, "conv2d");
  const Tensor xin = gemm_operand(x, arith), win = gemm_operand(weight, arith);
  Tensor out = empty({n, cout, ho, wo}, opts(out_dtype, x.device()));
  const Tensor bc = dense(bias);
  if (use_cuda("conv2d", x)) {
#if ENGINE_WITH_CUDA
    const Tensor xd = dense(xin), wd = dense(win);
    const cuda::GemmMode mode = cuda::GemmMode(arith);
    const bool by_cudnn =
        conv_algorithm() == ConvAlgorithm::cudnn && cuda::cudnn_conv2d_forward(pr, mode, xd, wd, bc, out);
    if (!by_cudnn) cuda::conv2d_forward(pr, mode, xd, wd, bc, out);
#endif
  } else {
    const Tensor xc = cpu_ready(dense(xin)), wc = cpu_ready(dense(win));
    dispatch_floating(out_dtype, "conv2d", [&](auto zero) {
      using T = decltype(zero);
      cpu::conv2d_forward<T>(pr, xc.data<T>(), wc.data<T>(), bc.defined() ? bc.data<T>() : nullptr, out.data<T>());
    });
  }
  F::conv2d(xin, win, bias, out, p);
  return out;
}

Tensor conv_transpose2d(const Tensor& y, const Tensor& weight, const Tensor& bias, const Conv2dParams& p,
                        int64_t output_padding_h, int64_t output_padding_w) {
  ENGINE_OP("conv_transpose2d", y, weight, bias);
  check_tensor("conv_transpose2d", "input", y, 4);
  check_tensor("conv_transpose2d", "weight", weight, 4);
  const GemmArith arith = arith_of("conv_transpose2d", y, weight);
  check_params("conv_transpose2d", p);
  const int64_t n = y.size(0), cout = y.size(1), ho = y.size(2), wo = y.size(3);
  const int64_t kh = weight.size(2), kw = weight.size(3), cin = weight.size(1) * p.groups;
  ENGINE_CHECK(weight.size(0) == cout, "conv_transpose2d: input {} has {} channels but weight {} has {} (its dim 0)",
               y.sizes().str(), cout, weight.sizes().str(), weight.size(0));
  check_weight("conv_transpose2d", weight, cin, p.groups);
  check_bias("conv_transpose2d", bias, y, cin, out_dtype_of(arith));
  ENGINE_CHECK(output_padding_h >= 0 && output_padding_h < p.stride_h && output_padding_w >= 0 &&
                   output_padding_w < p.stride_w,
               "conv_transpose2d: output_padding ({}, {}) must be >= 0 and below the stride ({}, {})",
               output_padding_h, output_padding_w, p.stride_h, p.stride_w);
  const int64_t h = kernels::conv_transpose_out_size(ho, kh, p.stride_h, p.pad_h, p.dilation_h, output_padding_h);
  const int64_t w = kernels::conv_transpose_out_size(wo, kw, p.stride_w, p.pad_w, p.dilation_w, output_padding_w);
  ENGINE_CHECK(ho >= 1 && wo >= 1 && h >= 1 && w >= 1,
               "conv_transpose2d: input {} with kernel {}x{}, stride ({}, {}), padding ({}, {}) gives an empty "
               "output {}x{}",
               y.sizes().str(), kh, kw, p.stride_h, p.stride_w, p.pad_h, p.pad_w, h, w);
  const DType out_dtype = out_dtype_of(arith);
  const cpu::ConvProblem pr = make_problem(n, cin, h, w, cout, kh, kw, ho, wo, p, out_dtype, "conv_transpose2d");
  const Tensor yin = gemm_operand(y, arith), win = gemm_operand(weight, arith);
  Tensor out = empty({n, cin, h, w}, opts(out_dtype, y.device()));
  const Tensor bc = dense(bias);
  if (use_cuda("conv_transpose2d", y)) {
#if ENGINE_WITH_CUDA
    const Tensor yd = dense(yin), wd = dense(win);
    const cuda::GemmMode mode = cuda::GemmMode(arith);
    const bool by_cudnn =
        conv_algorithm() == ConvAlgorithm::cudnn && cuda::cudnn_conv2d_input(pr, mode, yd, wd, bc, out);
    if (!by_cudnn) cuda::conv2d_input(pr, mode, yd, wd, bc, out);
#endif
  } else {
    const Tensor yc = cpu_ready(dense(yin)), wc = cpu_ready(dense(win));
    dispatch_floating(out_dtype, "conv_transpose2d", [&](auto zero) {
      using T = decltype(zero);
      cpu::conv2d_input<T>(pr, yc.data<T>(), wc.data<T>(), bc.defined() ? bc.data<T>() : nullptr, out.data<T>());
    });
  }
  F::conv_transpose2d(yin, win, bias, out, p);
  return out;
}

Tensor conv2d_weight(const Tensor& x, const Tensor& gy, int64_t kh, int64_t kw, const Conv2dParams& p) {
  ENGINE_OP("conv2d_weight", x, gy);
  check_tensor("conv2d_weight", "input", x, 4);
  check_tensor("conv2d_weight", "output gradient", gy, 4);
  const GemmArith arith = arith_of("conv2d_weight", x, gy);
  check_params("conv2d_weight", p);
  ENGINE_CHECK(kh >= 1 && kw >= 1, "conv2d_weight: kernel size must be >= 1, got {}x{}", kh, kw);
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), w = x.size(3), cout = gy.size(1);
  ENGINE_CHECK(gy.size(0) == n, "conv2d_weight: batch sizes differ: input {} vs output gradient {}", x.sizes().str(),
               gy.sizes().str());
  ENGINE_CHECK(cin % p.groups == 0 && cout % p.groups == 0,
               "conv2d_weight: channels {} (input) and {} (output) must be divisible by groups = {}", cin, cout,
               p.groups);
  const int64_t ho = kernels::conv_out_size(h, kh, p.stride_h, p.pad_h, p.dilation_h);
  const int64_t wo = kernels::conv_out_size(w, kw, p.stride_w, p.pad_w, p.dilation_w);
  ENGINE_CHECK(h + 2 * p.pad_h >= p.dilation_h * (kh - 1) + 1 && w + 2 * p.pad_w >= p.dilation_w * (kw - 1) + 1 &&
                   gy.size(2) == ho && gy.size(3) == wo,
               "conv2d_weight: output gradient {} does not match the conv2d output of input {} with kernel {}x{} "
               "(expected spatial size {}x{})",
               gy.sizes().str(), x.sizes().str(), kh, kw, ho, wo);
  const DType out_dtype = out_dtype_of(arith);
  const cpu::ConvProblem pr = make_problem(n, cin, h, w, cout, kh, kw, ho, wo, p, out_dtype, "conv2d_weight");
  const Tensor xin = gemm_operand(x, arith), gin = gemm_operand(gy, arith);
  Tensor out = empty({cout, cin / p.groups, kh, kw}, opts(out_dtype, x.device()));
  if (use_cuda("conv2d_weight", x)) {
#if ENGINE_WITH_CUDA
    const Tensor xd = dense(xin), gd = dense(gin);
    const cuda::GemmMode mode = cuda::GemmMode(arith);
    const bool by_cudnn = conv_algorithm() == ConvAlgorithm::cudnn && cuda::cudnn_conv2d_weight(pr, mode, xd, gd, out);
    if (!by_cudnn) cuda::conv2d_weight(pr, mode, xd, gd, out);
#endif
  } else {
    const Tensor xc = cpu_ready(dense(xin)), gc = cpu_ready(dense(gin));
    dispatch_floating(out_dtype, "conv2d_weight", [&](auto zero) {
      using T = decltype(zero);
      cpu::conv2d_weight<T>(pr, xc.data<T>(), gc.data<T>(), out.data<T>());
    });
  }
  F::conv2d_weight(xin, gin, out, kh, kw, p);
  return out;
}

}  // namespace engine
