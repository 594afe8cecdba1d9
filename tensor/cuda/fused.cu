// fused.cu: the fused kernels on the GPU, one thread per element, with the portable bodies of
// tensor/kernels/bias_act.h and tensor/kernels/adamw.h that the CPU loops of
// tensor/ops_fused.cpp call too.
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

#define ENGINE_FUSED_INSTANTIATE(T)                                                                      \
  template void launch_bias_act<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, kernels::BiasActParams, \
                                   Stream);                                                              \
  template void launch_bias_act_grad<T>(T*, const T*, const T*, int64_t, kernels::BiasActParams, Stream); \
  template void launch_adamw<T>(T*, const T*, T*, T*, int64_t, kernels::AdamWStep, Stream);

ENGINE_FUSED_INSTANTIATE(float)
ENGINE_FUSED_INSTANTIATE(double)

#undef ENGINE_FUSED_INSTANTIATE

}  // namespace engine::cuda
