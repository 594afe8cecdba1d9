// ops_fused.cpp: fused ops that replace chains of elementwise ops on the hot paths of a GAN step.
//
//   bias_act       y = clamp(act(x + b) * gain): StyleGAN2's bias_act (torch_utils/ops/bias_act.py),
//                  one pass over memory instead of three (add, leaky_relu, mul) and one saved
//                  tensor (y) instead of two; every EqualConv2d/EqualLinear/modulated conv uses it.
//   bias_act_grad  its backward, gy * gain * act'(y); differentiable again for R1's double backward
//                  (Note [bias_act double backward] in autograd/formulas/fused.cpp).
//   adamw_update_  the fused AdamW element update over the flat buffers (DESIGN.md section 5).
//   modulated_weight  Aurora's modulation + demodulation (spec 3.3-3.4) of a conv / linear kernel:
//                  3 passes (two small, one weight-sized write) instead of ~15 differentiable ops,
//                  and modulated_weight_grad, its first-order backward (6 passes).
// The arithmetic of each is a portable body in tensor/kernels/ (bias_act.h, adamw.h,
// modulated_weight.h), looped over here on the CPU (OpenMP) and launched by tensor/cuda/fused.cu
// on a GPU.
#include "autograd/formulas/fused.h"
#include "tensor/dispatch.h"
#include "tensor/kernels/adamw.h"
#include "tensor/kernels/bias_act.h"
#include "tensor/kernels/modulated_weight.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/fused.h"
#endif

namespace engine {

namespace {

kernels::BiasActParams bias_act_params(const char* op, BiasActKind act, double alpha, double gain,
                                       std::optional<double> clamp) {
  ENGINE_CHECK(act == BiasActKind::linear || act == BiasActKind::relu || act == BiasActKind::lrelu,
               "{}: unknown activation kind {}", op, int(act));
  // gain > 0 and alpha >= 0 keep sign(y) == sign(act(x + b)), which the gradient reads from y.
  ENGINE_CHECK(gain > 0, "{}: gain must be > 0, got {}", op, gain);
  ENGINE_CHECK(alpha >= 0, "{}: lrelu slope alpha must be >= 0, got {}", op, alpha);
  ENGINE_CHECK(!clamp || *clamp > 0, "{}: clamp must be > 0 when given, got {}", op, clamp ? *clamp : 0.0);
  return {int(act), alpha, gain, clamp ? *clamp : -1.0};
}

// The CPU loops. Everything the inner loops touch is a local of the parallel region (the functor
// copied by value, row pointers), so the compiler sees no aliasing between the stores and the
// functor's constants; `#pragma omp simd` then vectorises the selects; the loops are split in chunks of 4096 elements so that
// both the [N, C, H, W] (bias per row) and the [rows, C] (bias per column) layouts parallelise.
constexpr int64_t kChunk = 4096;

template <typename T, typename F>
void bias_act_loop(const T* x, const T* b, T* y, int64_t n, int64_t C, int64_t inner, const F f0) {
  const int64_t rows = n / inner;
  if (!b) {
    const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= 32768)
    for (int64_t k = 0; k < chunks; ++k) {
      const F f = f0;
      const int64_t lo = k * kChunk, hi = lo + kChunk < n ? lo + kChunk : n;
      const T* __restrict xr = x;
      T* __restrict yr = y;
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) yr[i] = f(xr[i]);
    }
  } else if (inner == 1) {  // bias along the last dim (linear layers): rows of C
    const int64_t nrows = n / C;
#pragma omp parallel for schedule(static) if (n >= 32768)
    for (int64_t r = 0; r < nrows; ++r) {
      const F f = f0;
      const T* __restrict xr = x + r * C;
      const T* __restrict br = b;
      T* __restrict yr = y + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = f(xr[c] + br[c]);
    }
  } else {  // rows of `inner` elements sharing one bias value (NCHW convs: one row per (n, c))
#pragma omp parallel for schedule(static) if (n >= 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const F f = f0;
      const T bv = b[r % C];
      const T* __restrict xr = x + r * inner;
      T* __restrict yr = y + r * inner;
#pragma omp simd
      for (int64_t j = 0; j < inner; ++j) yr[j] = f(xr[j] + bv);
    }
  }
}

template <typename T, typename F>
void bias_act_grad_loop(const T* gy, const T* y, T* gx, int64_t n, const F f0) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= 32768)
  for (int64_t k = 0; k < chunks; ++k) {
    const F f = f0;
    const int64_t lo = k * kChunk, hi = lo + kChunk < n ? lo + kChunk : n;
    const T* __restrict g = gy;
    const T* __restrict yy = y;
    T* __restrict o = gx;
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) o[i] = f(g[i], yy[i]);
  }
}

// Runs f(j) for j in [0, n) on the CPU, in parallel when the n units of `work` each are worth it.
template <typename F>
void cpu_units(int64_t n, int64_t work, const F& f) {
#pragma omp parallel for schedule(static) if (n * work >= 32768 && n > 1)
  for (int64_t j = 0; j < n; ++j) f(j);
}

// Checks the operands of modulated_weight / modulated_weight_grad and returns the problem's dims.
kernels::ModWeightDims modulated_weight_dims(const char* op, const Tensor& kernel, const Tensor& styles,
                                             const ModulatedWeightParams& p) {
  ENGINE_CHECK(kernel.defined() && styles.defined(), "{}: kernel and styles must be defined", op);
  check_floating(op, kernel);
  check_same(op, kernel, styles);
  ENGINE_CHECK(styles.dim() == 2, "{}: styles must be [B, Cin], got {}", op, styles.sizes().str());
  const int64_t lead = p.batched ? 1 : 0;
  const int64_t B = styles.size(0), I = styles.size(1);
  ENGINE_CHECK(kernel.dim() >= lead + 2, "{}: kernel must be {}[Cout, Cin, *taps], got {}", op,
               p.batched ? "[B, " : "", kernel.sizes().str());
  ENGINE_CHECK(!p.batched || kernel.size(0) == B, "{}: batched kernel {} does not match styles {} (B)", op,
               kernel.sizes().str(), styles.sizes().str());
  ENGINE_CHECK(kernel.size(lead + 1) == I, "{}: kernel {} does not match styles {} (Cin)", op, kernel.sizes().str(),
               styles.sizes().str());
  ENGINE_CHECK(!p.demodulate || p.eps >= 0, "{}: eps must be >= 0, got {}", op, p.eps);
  int64_t T = 1;
  for (int64_t k = lead + 2; k < kernel.dim(); ++k) T *= kernel.size(k);
  return {B, kernel.size(lead), I, T, p.batched, p.transposed, p.demodulate, p.weight_gain, p.eps};
}

Dims modulated_weight_shape(const Tensor& kernel, const kernels::ModWeightDims& d) {
  Dims out{d.B, d.transposed ? d.I : d.O, d.transposed ? d.O : d.I};
  for (int64_t k = (d.batched ? 3 : 2); k < kernel.dim(); ++k) out.push_back(kernel.size(k));
  return out;
}

}  // namespace

Tensor bias_act(const Tensor& x, const Tensor& bias, int64_t dim, BiasActKind act, double alpha, double gain,
                std::optional<double> clamp) {
  ENGINE_OP("bias_act", x, bias);
  ENGINE_CHECK(x.defined(), "bias_act: x is undefined");
  check_floating("bias_act", x);
  const kernels::BiasActParams p = bias_act_params("bias_act", act, alpha, gain, clamp);
  const int64_t nd = x.dim();
  int64_t C = 1, inner = 1;
  Tensor b;
  if (bias.defined()) {
    check_same("bias_act", x, bias);
    ENGINE_CHECK(nd >= 1, "bias_act: x must have at least one dim when a bias is given, got {}", x.sizes().str());
    const int64_t d = dim < 0 ? dim + nd : dim;
    ENGINE_CHECK(d >= 0 && d < nd, "bias_act: dim {} out of range for x {}", dim, x.sizes().str());
    ENGINE_CHECK(bias.dim() == 1 && bias.numel() == x.size(d),
                 "bias_act: bias must be 1-D with x.size({}) = {} elements, got {}", d, x.size(d), bias.sizes().str());
    C = x.size(d);
    for (int64_t k = d + 1; k < nd; ++k) inner *= x.size(k);
    b = bias.contiguous();
  }
  const Tensor xc = x.contiguous();
  Tensor out = empty(x.sizes(), opts(x.dtype(), x.device()));
  const int64_t n = out.numel();
  dispatch_floating(x.dtype(), "bias_act", [&](auto zero) {
    using T = decltype(zero);
    if (use_cuda("bias_act", x)) {
#if ENGINE_WITH_CUDA
      cuda::bias_act(out, xc, b, C, inner, p);
#endif
      return;
    }
    const T* xp = xc.data<T>();
    const T* bp = b.defined() ? b.data<T>() : nullptr;
    T* yp = out.data<T>();
    kernels::with_bias_act_fn<T, false>(p, [&](auto f) { bias_act_loop(xp, bp, yp, n, C, inner, f); });
  });
  autograd::formulas::bias_act(x, bias, out, dim, p);
  return out;
}

Tensor bias_act_grad(const Tensor& gy, const Tensor& y, BiasActKind act, double alpha, double gain,
                     std::optional<double> clamp) {
  ENGINE_OP("bias_act_grad", gy, y);
  ENGINE_CHECK(gy.defined() && y.defined(), "bias_act_grad: gy and y must be defined");
  check_floating("bias_act_grad", gy);
  check_same("bias_act_grad", gy, y);
  ENGINE_CHECK(gy.sizes() == y.sizes(), "bias_act_grad: gy {} and y {} must have the same shape",
               gy.sizes().str(), y.sizes().str());
  const kernels::BiasActParams p = bias_act_params("bias_act_grad", act, alpha, gain, clamp);
  const Tensor gc = gy.contiguous(), yc = y.contiguous();
  Tensor out = empty(gy.sizes(), opts(gy.dtype(), gy.device()));
  const int64_t n = out.numel();
  dispatch_floating(gy.dtype(), "bias_act_grad", [&](auto zero) {
    using T = decltype(zero);
    if (use_cuda("bias_act_grad", gy)) {
#if ENGINE_WITH_CUDA
      cuda::bias_act_grad(out, gc, yc, p);
#endif
      return;
    }
    const T* gp = gc.data<T>();
    const T* ypp = yc.data<T>();
    T* op = out.data<T>();
    kernels::with_bias_act_fn<T, true>(p, [&](auto f) { bias_act_grad_loop(gp, ypp, op, n, f); });
  });
  autograd::formulas::bias_act_grad(gy, y, out, p);
  return out;
}

Tensor modulated_weight(const Tensor& kernel, const Tensor& styles, const ModulatedWeightParams& p) {
  ENGINE_OP("modulated_weight", kernel, styles);
  const kernels::ModWeightDims d = modulated_weight_dims("modulated_weight", kernel, styles, p);
  const Tensor K = kernel.contiguous(), s = styles.contiguous();
  Tensor out = empty(modulated_weight_shape(kernel, d), opts(kernel.dtype(), kernel.device()));
  const Tensor scratch = empty({kernels::mw_scratch_size(d, false)}, opts(DType::f64, kernel.device()));
  dispatch_floating(kernel.dtype(), "modulated_weight", [&](auto zero) {
    using T = decltype(zero);
    if (use_cuda("modulated_weight", kernel)) {
#if ENGINE_WITH_CUDA
      cuda::modulated_weight(out, K, s, scratch, d);
#endif
      return;
    }
    const T* kp = K.data<T>();
    const T* sp = s.data<T>();
    T* wp = out.data<T>();
    const kernels::ModWeightScratch w = kernels::mw_scratch(d, scratch.data<double>(), false);
    if (d.demodulate) {
      cpu_units(d.bk_count() * d.O * d.I + d.B, d.T,
                [&](int64_t j) { kernels::mw_stats<T>(d, kp, sp, w.q, w.ss, j); });
      cpu_units(d.B * d.O + d.B * d.I, d.I, [&](int64_t j) { kernels::mw_rows<T>(d, sp, w.q, w.ss, w.c, w.sn, j); });
    }
    cpu_units(d.B * d.O * d.I, d.T, [&](int64_t r) { kernels::mw_write<T>(d, kp, sp, w.c, w.sn, wp, r); });
  });
  autograd::formulas::modulated_weight(kernel, styles, out, p);
  return out;
}

TensorList modulated_weight_grad(const Tensor& grad, const Tensor& kernel, const Tensor& styles,
                                 const ModulatedWeightParams& p, bool need_kernel, bool need_styles) {
  ENGINE_OP("modulated_weight_grad", grad, kernel, styles);
  const kernels::ModWeightDims d = modulated_weight_dims("modulated_weight_grad", kernel, styles, p);
  ENGINE_CHECK(grad.defined(), "modulated_weight_grad: grad is undefined");
  check_same("modulated_weight_grad", grad, kernel);
  const Dims wshape = modulated_weight_shape(kernel, d);
  ENGINE_CHECK(grad.sizes() == wshape, "modulated_weight_grad: grad {} must have the weight's shape {}",
               grad.sizes().str(), wshape.str());
  const Tensor G = grad.contiguous(), K = kernel.contiguous(), s = styles.contiguous();
  Tensor dK = need_kernel ? empty(kernel.sizes(), opts(kernel.dtype(), kernel.device())) : Tensor();
  Tensor ds = need_styles ? empty(styles.sizes(), opts(styles.dtype(), styles.device())) : Tensor();
  if (!need_kernel && !need_styles) return {dK, ds};
  const Tensor scratch = empty({kernels::mw_scratch_size(d, true)}, opts(DType::f64, kernel.device()));
  dispatch_floating(kernel.dtype(), "modulated_weight_grad", [&](auto zero) {
    using T = decltype(zero);
    if (use_cuda("modulated_weight_grad", kernel)) {
#if ENGINE_WITH_CUDA
      cuda::modulated_weight_grad(dK, ds, G, K, s, scratch, d);
#endif
      return;
    }
    // The passes of kernels/modulated_weight.h, in the order of launch_modulated_weight_grad.
    const T* gp = G.data<T>();
    const T* kp = K.data<T>();
    const T* sp = s.data<T>();
    T* dkp = need_kernel ? dK.data<T>() : nullptr;
    T* dsp = need_styles ? ds.data<T>() : nullptr;
    const kernels::ModWeightScratch w = kernels::mw_scratch(d, scratch.data<double>(), true);
    if (d.demodulate) {
      cpu_units(d.bk_count() * d.O * d.I + d.B, d.T,
                [&](int64_t j) { kernels::mw_stats<T>(d, kp, sp, w.q, w.ss, j); });
      cpu_units(d.B * d.O + d.B * d.I, d.I, [&](int64_t j) { kernels::mw_rows<T>(d, sp, w.q, w.ss, w.c, w.sn, j); });
    }
    if (d.demodulate || dsp) cpu_units(d.B * d.O * d.I, d.T, [&](int64_t j) { kernels::mw_grad_p<T>(d, gp, kp, w.P, j); });
    if (d.demodulate) cpu_units(d.B * d.O, d.I, [&](int64_t j) { kernels::mw_grad_rows(d, w.q, w.sn, w.P, w.cg, j); });
    if (dsp) {
      cpu_units(d.B * d.I, d.O, [&](int64_t j) { kernels::mw_grad_sn<T>(d, w.P, w.cg, w.q, w.sn, w.gsn, dsp, j); });
      if (d.demodulate) {
        cpu_units(d.B, d.I, [&](int64_t b) { kernels::mw_grad_part<T>(d, w.gsn, sp, w.part, b); });
        cpu_units(d.B * d.I, d.B, [&](int64_t j) { kernels::mw_grad_s<T>(d, w.ss, w.gsn, w.part, sp, dsp, j); });
      }
    }
    if (dkp)
      cpu_units(d.bk_count() * d.O * d.I, d.T * (d.batched ? 1 : d.B),
                [&](int64_t j) { kernels::mw_grad_k<T>(d, gp, kp, sp, w.cg, w.sn, dkp, j); });
  });
  return {dK, ds};
}

void adamw_update_(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, int64_t offset,
                   int64_t numel, const AdamWScalars& s) {
  ENGINE_OP("adamw", p);
  ENGINE_CHECK(p.defined() && g.defined() && m.defined() && v.defined(), "adamw_update_: undefined buffer");
  check_floating("adamw_update_", p);
  for (const Tensor* t : {&g, &m, &v}) {
    check_same("adamw_update_", p, *t);
    ENGINE_CHECK(t->numel() == p.numel() && t->is_contiguous(),
                 "adamw_update_: buffers must be contiguous with {} elements, got {}", p.numel(), t->sizes().str());
  }
  ENGINE_CHECK(p.is_contiguous(), "adamw_update_: the parameter buffer must be contiguous");
  ENGINE_CHECK(offset >= 0 && numel >= 0 && offset + numel <= p.numel(),
               "adamw_update_: segment [{}, {}) outside the buffer of {} elements", offset, offset + numel, p.numel());
  const kernels::AdamWStep k{s.b1, s.b2, s.eps, s.decay, s.step_size, s.inv_c2};
  dispatch_floating(p.dtype(), "adamw_update_", [&](auto zero) {
    using T = decltype(zero);
    if (use_cuda("adamw_update_", p)) {
#if ENGINE_WITH_CUDA
      cuda::adamw_update(p, g, m, v, offset, numel, k);
#endif
      return;
    }
    T* pp = p.data<T>();
    const T* gp = g.data<T>();
    T* mp = m.data<T>();
    T* vp = v.data<T>();
#pragma omp parallel for schedule(static) if (numel >= 16384)
    for (int64_t i = offset; i < offset + numel; ++i) kernels::adamw_update(pp[i], gp[i], mp[i], vp[i], k);
  });
}

}  // namespace engine
