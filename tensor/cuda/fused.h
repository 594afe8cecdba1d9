// fused.h (cuda): the Tensor-level side of the fused kernels (fused.cpp; kernels in fused.cu).
// Called by tensor/ops_fused.cpp for CUDA tensors; arguments already checked there, outputs
// allocated by the op. Plain C++ (no CUDA headers).
#pragma once
#include "tensor/kernels/adamw.h"
#include "tensor/kernels/bias_act.h"
#include "tensor/kernels/modulated_weight.h"
#include "tensor/tensor.h"

namespace engine::cuda {

// out = bias_act(x, b) with x and out contiguous; b contiguous [C] or undefined; `inner` is the
// number of elements after the bias dim.
void bias_act(const Tensor& out, const Tensor& x, const Tensor& b, int64_t C, int64_t inner,
              const kernels::BiasActParams& p);
// out = bias_act_grad(gy, y), all contiguous and of one shape.
void bias_act_grad(const Tensor& out, const Tensor& gy, const Tensor& y, const kernels::BiasActParams& p);
// AdamW on elements [offset, offset + numel) of the contiguous flat buffers p, g, m, v.
void adamw_update(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, int64_t offset, int64_t numel,
                  const kernels::AdamWStep& s);
// W = modulated_weight(K, s) with W, K, s contiguous and `scratch` a contiguous f64 buffer of
// kernels::mw_scratch_size(d, false) elements, all on one device.
void modulated_weight(const Tensor& W, const Tensor& K, const Tensor& s, const Tensor& scratch,
                      const kernels::ModWeightDims& d);
// Its gradient: dK and ds (undefined: not wanted) from G (contiguous, W's layout); scratch of
// kernels::mw_scratch_size(d, true) elements.
void modulated_weight_grad(const Tensor& dK, const Tensor& ds, const Tensor& G, const Tensor& K, const Tensor& s,
                           const Tensor& scratch, const kernels::ModWeightDims& d);

}  // namespace engine::cuda
