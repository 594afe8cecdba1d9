// fused.cu: the fused kernels on the GPU, with the portable bodies of tensor/kernels/bias_act.h,
// tensor/kernels/adamw.h and tensor/kernels/modulated_weight.h that the CPU loops of
// tensor/ops_fused.cpp call too. bias_act and AdamW: one thread per element. modulated_weight: one
// thread per independent unit of the passes listed in kernels/modulated_weight.h (a row of taps, a
// (b, o) pair, ...); every reduction is a serial loop inside one thread, in a fixed order, so the
// results do not depend on the launch configuration and need no atomics.
#include "tensor/cuda/fused_launch.h"
#include "tensor/cuda/launch.cuh"

namespace engine::cuda {

namespace {

// One thread per element; Fn is a BiasActFn / BiasActGradFn instantiation (kernels/bias_act.h).
template <typename T, typename Fn>
struct BiasActKernel {
  T* y;
  const T* x;
  const T* b;  // null: no bias
  int64_t C, inner;
  Fn fn;
  ENGINE_KERNEL void operator()(int64_t i) const { y[i] = fn(b ? x[i] + b[(i / inner) % C] : x[i]); }
};

template <typename T, typename Fn>
struct BiasActGradKernel {
  T* gx;
  const T* gy;
  const T* y;
  Fn fn;
  ENGINE_KERNEL void operator()(int64_t i) const { gx[i] = fn(gy[i], y[i]); }
};

}  // namespace

template <typename T>
void launch_bias_act(T* y, const T* x, const T* b, int64_t n, int64_t C, int64_t inner,
                     kernels::BiasActParams p, Stream stream) {
  kernels::with_bias_act_fn<T, false>(p, [&](auto fn) {
    launch_elements(n, BiasActKernel<T, decltype(fn)>{y, x, b, C, inner, fn}, stream);
  });
}

template <typename T>
void launch_bias_act_grad(T* gx, const T* gy, const T* y, int64_t n, kernels::BiasActParams p, Stream stream) {
  kernels::with_bias_act_fn<T, true>(p, [&](auto fn) {
    launch_elements(n, BiasActGradKernel<T, decltype(fn)>{gx, gy, y, fn}, stream);
  });
}

template <typename T>
void launch_adamw(T* p, const T* g, T* m, T* v, int64_t n, kernels::AdamWStep s, Stream stream) {
  launch_elements(n, [=] ENGINE_KERNEL(int64_t i) { kernels::adamw_update(p[i], g[i], m[i], v[i], s); }, stream);
}

namespace {

// The first two passes of modulated_weight and of its gradient (demodulation only): the kernel's
// row statistics and the styles' mean square, then the per-(b, o) scales and normalised styles.
template <typename T>
void launch_mw_stats_rows(const T* K, const T* s, kernels::ModWeightScratch w, kernels::ModWeightDims d,
                          Stream stream) {
  launch_elements(
      d.bk_count() * d.O * d.I + d.B,
      [=] ENGINE_KERNEL(int64_t j) { kernels::mw_stats<T>(d, K, s, w.q, w.ss, j); }, stream);
  launch_elements(
      d.B * d.O + d.B * d.I, [=] ENGINE_KERNEL(int64_t j) { kernels::mw_rows<T>(d, s, w.q, w.ss, w.c, w.sn, j); },
      stream);
}

}  // namespace

template <typename T>
void launch_modulated_weight(T* W, const T* K, const T* s, kernels::ModWeightScratch w, kernels::ModWeightDims d,
                             Stream stream) {
  if (d.demodulate) launch_mw_stats_rows(K, s, w, d, stream);
  launch_elements(
      d.B * d.O * d.I, [=] ENGINE_KERNEL(int64_t r) { kernels::mw_write<T>(d, K, s, w.c, w.sn, W, r); }, stream);
}

template <typename T>
void launch_modulated_weight_grad(T* dK, T* ds, const T* G, const T* K, const T* s, kernels::ModWeightScratch w,
                                  kernels::ModWeightDims d, Stream stream) {
  if (d.demodulate) launch_mw_stats_rows(K, s, w, d, stream);
  if (d.demodulate || ds) {
    launch_elements(
        d.B * d.O * d.I, [=] ENGINE_KERNEL(int64_t j) { kernels::mw_grad_p<T>(d, G, K, w.P, j); }, stream);
  }
  if (d.demodulate) {
    launch_elements(
        d.B * d.O, [=] ENGINE_KERNEL(int64_t j) { kernels::mw_grad_rows(d, w.q, w.sn, w.P, w.cg, j); }, stream);
  }
  if (ds) {
    launch_elements(
        d.B * d.I, [=] ENGINE_KERNEL(int64_t j) { kernels::mw_grad_sn<T>(d, w.P, w.cg, w.q, w.sn, w.gsn, ds, j); },
        stream);
    if (d.demodulate) {
      launch_elements(
          d.B, [=] ENGINE_KERNEL(int64_t b) { kernels::mw_grad_part<T>(d, w.gsn, s, w.part, b); }, stream);
      launch_elements(
          d.B * d.I, [=] ENGINE_KERNEL(int64_t j) { kernels::mw_grad_s<T>(d, w.ss, w.gsn, w.part, s, ds, j); },
          stream);
    }
  }
  if (dK) {
    launch_elements(
        d.bk_count() * d.O * d.I,
        [=] ENGINE_KERNEL(int64_t j) { kernels::mw_grad_k<T>(d, G, K, s, w.cg, w.sn, dK, j); }, stream);
  }
}

#define ENGINE_FUSED_INSTANTIATE(T)                                                                      \
  template void launch_bias_act<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, kernels::BiasActParams, \
                                   Stream);                                                              \
  template void launch_bias_act_grad<T>(T*, const T*, const T*, int64_t, kernels::BiasActParams, Stream); \
  template void launch_adamw<T>(T*, const T*, T*, T*, int64_t, kernels::AdamWStep, Stream);             \
  template void launch_modulated_weight<T>(T*, const T*, const T*, kernels::ModWeightScratch,            \
                                           kernels::ModWeightDims, Stream);                             \
  template void launch_modulated_weight_grad<T>(T*, T*, const T*, const T*, const T*,                    \
                                                kernels::ModWeightScratch, kernels::ModWeightDims, Stream);

ENGINE_FUSED_INSTANTIATE(float)
ENGINE_FUSED_INSTANTIATE(double)

#undef ENGINE_FUSED_INSTANTIATE

}  // namespace engine::cuda
