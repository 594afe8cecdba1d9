// fused_launch.h (cuda): launchers of the fused kernels (fused.cu): bias_act, its gradient and the
// AdamW update, the modulated weight and its gradient. Plain types only, shared by nvcc and the C++ side (fused.cpp).
#pragma once
#include <cstdint>

#include "tensor/cuda/device.h"
#include "tensor/kernels/adamw.h"
#include "tensor/kernels/bias_act.h"
#include "tensor/kernels/modulated_weight.h"

namespace engine::cuda {

// y[i] = BiasActFn(x[i] + b[(i / inner) % C]) for i < n (b null: no bias); all contiguous.
template <typename T>
void launch_bias_act(T* y, const T* x, const T* b, int64_t n, int64_t C, int64_t inner,
                     kernels::BiasActParams p, Stream stream);
// gx[i] = BiasActGradFn(gy[i], y[i]) for i < n.
template <typename T>
void launch_bias_act_grad(T* gx, const T* gy, const T* y, int64_t n, kernels::BiasActParams p, Stream stream);
// adamw_update on elements [0, n) of the given (already offset) flat buffers.
template <typename T>
void launch_adamw(T* p, const T* g, T* m, T* v, int64_t n, kernels::AdamWStep s, Stream stream);
// W = modulated_weight(K, s) (kernels/modulated_weight.h): 3 launches demodulated, 1 otherwise;
// w: the forward scratch (mw_scratch(d, base, false)) on the device.
template <typename T>
void launch_modulated_weight(T* W, const T* K, const T* s, kernels::ModWeightScratch w, kernels::ModWeightDims d,
                             Stream stream);
// dK and ds (either null: not wanted) from G = dL/dW; w: the backward scratch.
template <typename T>
void launch_modulated_weight_grad(T* dK, T* ds, const T* G, const T* K, const T* s, kernels::ModWeightScratch w,
                                  kernels::ModWeightDims d, Stream stream);

}  // namespace engine::cuda
