// ops_deform.cpp: deform_conv2d, modulated deformable convolution (DCNv2, Zhu et al. 2019, eq. 3)
// with the semantics of torchvision.ops.deform_conv2d, and its backward primitive.
//
//   out[n, o, p] = b[o] + sum_{c in group(o)} sum_k W[o, c, k] * m[n, g(c), k, p] * bilinear(x[n, c], pos(k, p))
//   pos(k, p) = (oy*s_h - pad_h + i*d_h + dy[n, g(c), k, p],  ox*s_w - pad_w + j*d_w + dx[n, g(c), k, p])
//
// for output pixel p = (oy, ox), tap k = (i, j), offset group g(c) of channel c (see
// tensor/kernels/deform.h for bilinear() and its derivatives, exactly torchvision's).
//
// Implementation ("deformable im2col", as torchvision and mmcv): per sample, the columns
// [Cin*kh*kw, Ho*Wo] hold the masked bilinear samples; then one GEMM per weight group (cpu::gemm,
// OpenBLAS; small per-group GEMMs spread over OpenMP threads, see tensor/cpu/gemm.h)
//   out_g [Cout/groups, Ho*Wo] = W_g [Cout/groups, Cin/groups*kh*kw] x columns_g.
// Backward (deform_conv2d_backward, a separate primitive without a backward of its own, so the
// op's Node is once-differentiable; autograd/formulas/deform.cpp):
//   grad_columns_g = W_g^T grad_out_g                          (GEMM)
//   grad_x         = col2im(m * grad_columns) with the bilinear weights (scatter, per channel)
//   grad_dy, dx    = sum_c grad_columns * m * d bilinear / dy, dx   (per sampling point)
//   grad_m         = sum_c grad_columns * bilinear                   (per sampling point)
//   grad_W_g       = sum_n grad_out_g columns_g^T               (GEMM)
//   grad_b         = sum_{n, p} grad_out
// On CUDA (tensor/cuda/deform.cu) both directions are direct kernels, one thread per output
// element, over the same sampling bodies (tensor/kernels/deform.h); no columns, no GEMM.
#include <algorithm>
#include <cstdint>

#include "autograd/formulas/deform.h"
#include "autograd/grad_mode.h"
#include "tensor/cpu/deform.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/deform.h"
#endif
#include "tensor/cpu/gemm.h"
#include "tensor/cpu/loops.h"
#include "tensor/dispatch.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"

namespace engine {

namespace {

// Sizes of one call, checked against each other.
struct DeformShape {
  kernels::DeformGeometry g;
  int64_t N = 0, Cin = 0, Cout = 0, groups = 1;
};

DeformShape check_deform(const char* op, const Tensor& x, const Tensor& offset, const Tensor& weight,
                         const Tensor& bias, const Tensor& mask, const Conv2dParams& p) {
  ENGINE_CHECK(x.defined(), "{}: input x is undefined", op);
  ENGINE_CHECK(offset.defined(), "{}: offset is undefined", op);
  ENGINE_CHECK(weight.defined(), "{}: weight is undefined", op);
  check_floating(op, x);
  for (const Tensor* t : {&offset, &weight, &bias, &mask})
    if (t->defined()) check_same(op, x, *t);
  ENGINE_CHECK(x.dim() == 4, "{}: expected x of shape [N, Cin, H, W], got {}", op, x.sizes().str());
  ENGINE_CHECK(weight.dim() == 4, "{}: expected weight of shape [Cout, Cin/groups, kh, kw], got {}", op,
               weight.sizes().str());
  ENGINE_CHECK(offset.dim() == 4, "{}: expected offset of shape [N, 2*offset_groups*kh*kw, Ho, Wo], got {}", op,
               offset.sizes().str());
  ENGINE_CHECK(!mask.defined() || mask.dim() == 4,
               "{}: expected mask of shape [N, offset_groups*kh*kw, Ho, Wo], got {}", op, mask.sizes().str());
  ENGINE_CHECK(p.stride_h >= 1 && p.stride_w >= 1, "{}: stride must be >= 1, got {}x{}", op, p.stride_h, p.stride_w);
  ENGINE_CHECK(p.dilation_h >= 1 && p.dilation_w >= 1, "{}: dilation must be >= 1, got {}x{}", op, p.dilation_h,
               p.dilation_w);
  ENGINE_CHECK(p.pad_h >= 0 && p.pad_w >= 0, "{}: padding must be >= 0, got {}x{}", op, p.pad_h, p.pad_w);
  ENGINE_CHECK(p.groups >= 1, "{}: groups must be >= 1, got {}", op, p.groups);

  DeformShape s;
  kernels::DeformGeometry& g = s.g;
  s.N = x.size(0), s.Cin = x.size(1), s.Cout = weight.size(0), s.groups = p.groups;
  g.H = x.size(2), g.W = x.size(3), g.kh = weight.size(2), g.kw = weight.size(3);
  ENGINE_CHECK(s.Cin >= 1 && g.H >= 1 && g.W >= 1, "{}: x of shape {} is empty", op, x.sizes().str());
  ENGINE_CHECK(g.kh >= 1 && g.kw >= 1, "{}: the kernel size must be positive, weight has shape {}", op,
               weight.sizes().str());
  ENGINE_CHECK(s.Cin % p.groups == 0, "{}: input channels {} are not divisible by groups {}", op, s.Cin, p.groups);
  ENGINE_CHECK(weight.size(1) * p.groups == s.Cin,
               "{}: weight {} has {} input channels per group, but x has {} channels in {} groups (expected "
               "weight.size(1) = {})",
               op, weight.sizes().str(), weight.size(1), s.Cin, p.groups, s.Cin / p.groups);
  ENGINE_CHECK(s.Cout >= 1 && s.Cout % p.groups == 0, "{}: output channels {} (weight {}) are not a positive multiple "
               "of groups {}", op, s.Cout, weight.sizes().str(), p.groups);
  ENGINE_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == s.Cout),
               "{}: expected bias of shape [{}], got {}", op, s.Cout, bias.sizes().str());
  g.stride_h = p.stride_h, g.stride_w = p.stride_w, g.pad_h = p.pad_h, g.pad_w = p.pad_w;
  g.dilation_h = p.dilation_h, g.dilation_w = p.dilation_w;
  g.Ho = (g.H + 2 * p.pad_h - (p.dilation_h * (g.kh - 1) + 1)) / p.stride_h + 1;
  g.Wo = (g.W + 2 * p.pad_w - (p.dilation_w * (g.kw - 1) + 1)) / p.stride_w + 1;
  ENGINE_CHECK(g.H + 2 * p.pad_h >= p.dilation_h * (g.kh - 1) + 1 && g.W + 2 * p.pad_w >= p.dilation_w * (g.kw - 1) + 1,
               "{}: the {}x{} kernel (dilation {}x{}) does not fit the {}x{} input padded by {}x{}", op, g.kh, g.kw,
               p.dilation_h, p.dilation_w, g.H, g.W, p.pad_h, p.pad_w);
  ENGINE_CHECK(g.H * g.W <= int64_t(INT32_MAX), "{}: input plane {}x{} too large (32-bit sample indices)", op, g.H,
               g.W);

  const int64_t K = g.taps();
  ENGINE_CHECK(offset.size(1) >= 2 * K && offset.size(1) % (2 * K) == 0,
               "{}: offset has {} channels, expected a positive multiple of 2*kh*kw = {} (2 * offset_groups * kh * kw)",
               op, offset.size(1), 2 * K);
  g.offset_groups = offset.size(1) / (2 * K);
  ENGINE_CHECK(s.Cin % g.offset_groups == 0, "{}: input channels {} are not divisible by the {} offset groups "
               "(offset channels {} / (2*kh*kw))", op, s.Cin, g.offset_groups, offset.size(1));
  ENGINE_CHECK(offset.size(0) == s.N, "{}: offset batch size {} does not match x's {}", op, offset.size(0), s.N);
  ENGINE_CHECK(offset.size(2) == g.Ho && offset.size(3) == g.Wo,
               "{}: offset has spatial size {}x{}, expected the output size {}x{}", op, offset.size(2), offset.size(3),
               g.Ho, g.Wo);
  if (mask.defined()) {
    ENGINE_CHECK(mask.size(1) == g.offset_groups * K,
                 "{}: mask has {} channels, expected offset_groups * kh * kw = {} * {} = {}", op, mask.size(1),
                 g.offset_groups, K, g.offset_groups * K);
    ENGINE_CHECK(mask.size(0) == s.N, "{}: mask batch size {} does not match x's {}", op, mask.size(0), s.N);
    ENGINE_CHECK(mask.size(2) == g.Ho && mask.size(3) == g.Wo,
                 "{}: mask has spatial size {}x{}, expected the output size {}x{}", op, mask.size(2), mask.size(3),
                 g.Ho, g.Wo);
  }
  return s;
}

#if ENGINE_WITH_CUDA
cuda::DeformConvShape cuda_shape(const DeformShape& s) {
  cuda::DeformConvShape c;
  c.g = s.g, c.N = s.N, c.Cin = s.Cin, c.Cout = s.Cout, c.groups = s.groups;
  return c;
}
#endif

Tensor contiguous_or_undefined(const Tensor& t) { return t.defined() ? contiguous(t) : Tensor(); }

// A scratch buffer of `count` sampling points (arena memory, attributed to the op).
template <typename T>
kernels::DeformPoint<T>* plan_buffer(Tensor& holder, int64_t count) {
  holder = empty({count * int64_t(sizeof(kernels::DeformPoint<T>))}, opts(DType::u8));
  return reinterpret_cast<kernels::DeformPoint<T>*>(holder.raw_data());
}

}  // namespace

Tensor deform_conv2d(const Tensor& x, const Tensor& offset, const Tensor& weight, const Tensor& bias,
                     const Tensor& mask, const Conv2dParams& p) {
  ENGINE_OP("deform_conv2d", x, offset, weight, bias, mask);
  const DeformShape s = check_deform("deform_conv2d", x, offset, weight, bias, mask, p);
  const kernels::DeformGeometry& g = s.g;
  Tensor xc, oc, wc, bc, mc;
  {
    autograd::NoGradGuard no_grad;  // the Node below is recorded on the inputs themselves
    xc = contiguous(x), oc = contiguous(offset), wc = contiguous(weight);
    bc = contiguous_or_undefined(bias), mc = contiguous_or_undefined(mask);
  }
  const int64_t K = g.taps(), P = g.pixels(), G = g.offset_groups;
  const int64_t cin_g = s.Cin / s.groups, cout_g = s.Cout / s.groups;
  Tensor out = empty({s.N, s.Cout, g.Ho, g.Wo}, opts(x.dtype(), x.device()));
  if (use_cuda("deform_conv2d", x)) {
#if ENGINE_WITH_CUDA
    cuda::deform_conv2d_forward(cuda_shape(s), xc, oc, wc, bc, mc, out);
#endif
  } else dispatch_floating(x.dtype(), "deform_conv2d", [&](auto zero) {
    using T = decltype(zero);
    Tensor plan_holder;
    kernels::DeformPoint<T>* plan = plan_buffer<T>(plan_holder, G * K * P);
    Tensor columns = empty({s.Cin * K, P}, opts(x.dtype()));
    T* cols = columns.data<T>();
    const T* w = wc.data<T>();
    for (int64_t n = 0; n < s.N; ++n) {
      const T* mask_n = mc.defined() ? mc.data<T>() + n * G * K * P : nullptr;
      cpu::deform_plan<T>(oc.data<T>() + n * 2 * G * K * P, mask_n, g, /*fold_mask=*/true, plan);
      cpu::deform_im2col<T>(xc.data<T>() + n * s.Cin * g.H * g.W, plan, nullptr, g, s.Cin, cols);
      T* out_n = out.data<T>() + n * s.Cout * P;
      if (bc.defined()) {
        const T* b = bc.data<T>();
        for (int64_t o = 0; o < s.Cout; ++o) std::fill(out_n + o * P, out_n + (o + 1) * P, b[o]);
      }
      const T beta = bc.defined() ? T(1) : T(0);
      cpu::for_each_item(s.groups, cpu::items_parallel(s.groups, cout_g, P, cin_g * K), [&](int64_t grp, int) {
        cpu::gemm<T>(false, false, cout_g, P, cin_g * K, T(1), w + grp * cout_g * cin_g * K, cin_g * K,
                     cols + grp * cin_g * K * P, P, beta, out_n + grp * cout_g * P, P);
      });
    }
  });
  autograd::formulas::deform_conv2d(x, offset, weight, bias, mask, p, out);
  return out;
}

DeformConv2dGrads deform_conv2d_backward(const Tensor& grad_out, const Tensor& x, const Tensor& offset,
                                         const Tensor& weight, const Tensor& mask, const Conv2dParams& p,
                                         const std::array<bool, 5>& needed) {
  ENGINE_OP("deform_conv2d_backward", grad_out, x, offset, weight, mask);
  autograd::NoGradGuard no_grad;  // a primitive without a backward: it records nothing
  const DeformShape s = check_deform("deform_conv2d_backward", x, offset, weight, Tensor(), mask, p);
  const kernels::DeformGeometry& g = s.g;
  ENGINE_CHECK(grad_out.defined(), "deform_conv2d_backward: grad_out is undefined");
  check_same("deform_conv2d_backward", x, grad_out);
  ENGINE_CHECK(grad_out.sizes() == Dims({s.N, s.Cout, g.Ho, g.Wo}),
               "deform_conv2d_backward: grad_out has shape {}, expected the output shape {}", grad_out.sizes().str(),
               Dims({s.N, s.Cout, g.Ho, g.Wo}).str());
  const bool need_x = needed[0], need_offset = needed[1], need_weight = needed[2], need_bias = needed[3];
  const bool need_mask = needed[4] && mask.defined();
  // x's values are read only by the weight, offset and mask gradients, the weight's only by the
  // input, offset and mask gradients: the other one may be a stand-in of the right shape (the
  // autograd formula passes an expanded zero for a tensor it did not save), never copied here.
  const bool read_x = need_weight || need_offset || need_mask;
  const bool read_w = need_x || need_offset || need_mask;
  const Tensor go = contiguous(grad_out), oc = contiguous(offset), mc = contiguous_or_undefined(mask);
  const Tensor xc = read_x ? contiguous(x) : Tensor(), wc = read_w ? contiguous(weight) : Tensor();
  const int64_t K = g.taps(), P = g.pixels(), G = g.offset_groups, HW = g.H * g.W;
  const int64_t cin_g = s.Cin / s.groups, cout_g = s.Cout / s.groups;
  const TensorOptions o = opts(x.dtype(), x.device());

  DeformConv2dGrads r;
  if (use_cuda("deform_conv2d_backward", x)) {
#if ENGINE_WITH_CUDA
    // Direct kernels (tensor/cuda/deform.cu); grad_x is accumulated atomically into zeros.
    if (need_x) r.x = zeros(x.sizes(), o);
    if (need_offset) r.offset = empty(offset.sizes(), o);
    if (need_weight) r.weight = empty(weight.sizes(), o);
    if (need_bias) r.bias = empty({s.Cout}, o);
    if (need_mask) r.mask = empty(mask.sizes(), o);
    cuda::deform_conv2d_backward(cuda_shape(s), go, xc, oc, wc, mc, r.x, r.offset, r.weight, r.bias, r.mask);
#endif
    return r;
  }
  if (need_x) r.x = empty(x.sizes(), o);
  if (need_offset) r.offset = empty(offset.sizes(), o);
  if (need_weight) r.weight = s.N > 0 ? empty(weight.sizes(), o) : zeros(weight.sizes(), o);  // summed over n
  if (need_bias) r.bias = empty({s.Cout}, o);
  if (need_mask) r.mask = empty(mask.sizes(), o);

  dispatch_floating(x.dtype(), "deform_conv2d_backward", [&](auto zero) {
    using T = decltype(zero);
    const T* gop = go.data<T>();
    if (need_bias) {
      T* gb = r.bias.data<T>();
      // One output channel per iteration, summed over n then p in order.
#pragma omp parallel for schedule(static) if (s.N * s.Cout * P >= cpu::kParallelGrain && s.Cout > 1)
      for (int64_t oc_i = 0; oc_i < s.Cout; ++oc_i) {
        T acc = T(0);
        for (int64_t n = 0; n < s.N; ++n) {
          const T* row = gop + (n * s.Cout + oc_i) * P;
          for (int64_t q = 0; q < P; ++q) acc += row[q];
        }
        gb[oc_i] = acc;
      }
    }
    const bool need_grad_columns = need_x || need_offset || need_mask;
    if (!need_grad_columns && !need_weight) return;
    Tensor plan_holder, columns, grad_columns;
    kernels::DeformPoint<T>* plan = plan_buffer<T>(plan_holder, G * K * P);
    if (need_weight) columns = empty({s.Cin * K, P}, o);
    if (need_grad_columns) grad_columns = empty({s.Cin * K, P}, o);
    const T* w = read_w ? wc.data<T>() : nullptr;
    for (int64_t n = 0; n < s.N; ++n) {
      const T* x_n = read_x ? xc.data<T>() + n * s.Cin * HW : nullptr;
      const T* mask_n = mc.defined() ? mc.data<T>() + n * G * K * P : nullptr;
      const T* go_n = gop + n * s.Cout * P;
      cpu::deform_plan<T>(oc.data<T>() + n * 2 * G * K * P, mask_n, g, /*fold_mask=*/false, plan);
      if (need_weight) {
        T* cols = columns.data<T>();
        cpu::deform_im2col<T>(x_n, plan, mask_n, g, s.Cin, cols);
        // grad_W_g (+)= grad_out_g [cout_g, P] x columns_g^T [P, cin_g*K]: sample 0 overwrites.
        T* gw = r.weight.data<T>();
        cpu::for_each_item(s.groups, cpu::items_parallel(s.groups, cout_g, cin_g * K, P), [&](int64_t grp, int) {
          cpu::gemm<T>(false, true, cout_g, cin_g * K, P, T(1), go_n + grp * cout_g * P, P, cols + grp * cin_g * K * P,
                       P, n == 0 ? T(0) : T(1), gw + grp * cout_g * cin_g * K, cin_g * K);
        });
      }
      if (!need_grad_columns) continue;
      T* gcols = grad_columns.data<T>();
      // grad_columns_g [cin_g*K, P] = W_g^T [cin_g*K, cout_g] x grad_out_g [cout_g, P]
      cpu::for_each_item(s.groups, cpu::items_parallel(s.groups, cin_g * K, P, cout_g), [&](int64_t grp, int) {
        cpu::gemm<T>(true, false, cin_g * K, P, cout_g, T(1), w + grp * cout_g * cin_g * K, cin_g * K,
                     go_n + grp * cout_g * P, P, T(0), gcols + grp * cin_g * K * P, P);
      });
      if (need_x) cpu::deform_col2im<T>(gcols, plan, mask_n, g, s.Cin, r.x.data<T>() + n * s.Cin * HW);
      if (need_offset || need_mask) {
        // The offset gradient is computed alongside the mask gradient; when only one is wanted
        // the other goes to scratch space.
        Tensor scratch;
        T* goff = need_offset ? r.offset.data<T>() + n * 2 * G * K * P : nullptr;
        if (!goff) {
          scratch = empty({2 * G * K * P}, o);
          goff = scratch.data<T>();
        }
        T* gm = need_mask ? r.mask.data<T>() + n * G * K * P : nullptr;
        cpu::deform_offset_mask_grad<T>(x_n, gcols, plan, g, s.Cin, goff, gm);
      }
    }
  });
  return r;
}

}  // namespace engine
