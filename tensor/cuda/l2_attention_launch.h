// l2_attention_launch.h (cuda): the fused L2 attention launchers (l2_attention.cu), plain types
// only. Layouts: kernels::L2AttnGeom (tensor/kernels/l2_attention.h); dq, dk, dv contiguous
// [B, Tq, H, d], [B, Tk, H, d], [B, Tk, H, dv] (null: not needed); D a [B, H, Tq] scratch.
#pragma once
#include <cstdint>

#include "tensor/cuda/device.h"
#include "tensor/kernels/l2_attention.h"

namespace engine::cuda {

template <typename T>
void launch_l2_attention_forward(const kernels::L2AttnGeom& g, const T* q, const T* k, const T* v, T* out, T* lse,
                                 Stream stream);

template <typename T>
void launch_l2_attention_backward(const kernels::L2AttnGeom& g, const T* grad_out, const T* q, const T* k, const T* v,
                                  const T* out, const T* lse, T* D, T* dq, T* dk, T* dv, Stream stream);

}  // namespace engine::cuda
