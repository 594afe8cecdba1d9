// deform.h (cpu): the CPU loops of deform_conv2d over the per-point math in tensor/kernels/deform.h.
//
// Everything here works on one sample (the caller loops over the batch) with contiguous buffers:
//   x        [C, H, W]             offset [G, kh*kw, 2, Ho, Wo] (= [2*G*kh*kw, Ho, Wo])
//   mask     [G, kh*kw, Ho, Wo]    (nullptr: no mask, i.e. 1)
//   columns  [C*kh*kw, Ho*Wo]      row c*kh*kw + k holds channel c sampled at tap k
//   plan     [G, kh*kw, Ho*Wo]     one kernels::DeformPoint per sampling point
// Channel c belongs to offset group c / (C / G).
//
// Determinism: every output element is produced by exactly one loop iteration, and sums run in a
// fixed order (the input gradient is parallel over channels, each channel's plane written by one
// thread; the offset/mask gradients are parallel over sampling points, summing over channels in
// order), so results do not depend on the thread count.
#pragma once
#include <cstdint>

#include "tensor/kernels/deform.h"

namespace engine::cpu {

// Fill the sampling plan. fold_mask: multiply the value coefficients by the mask (forward: the
// columns are then the plan applied to x); otherwise the value coefficients stay unmasked and the
// derivative coefficients are multiplied by the mask (backward: d out / d offset carries the mask,
// d out / d mask does not).
template <typename T>
void deform_plan(const T* offset, const T* mask, const kernels::DeformGeometry& g, bool fold_mask,
                 kernels::DeformPoint<T>* plan);

// columns[c*K + k, p] = m(k, p) * sum_q value[q] x_c[idx[q]], with m = mask (or 1 when mask is null).
template <typename T>
void deform_im2col(const T* x, const kernels::DeformPoint<T>* plan, const T* mask, const kernels::DeformGeometry& g,
                   int64_t channels, T* columns);

// The adjoint of deform_im2col w.r.t. x: grad_x (overwritten) = scatter of m * grad_columns into
// the four corners of every sampling point with the value coefficients.
template <typename T>
void deform_col2im(const T* grad_columns, const kernels::DeformPoint<T>* plan, const T* mask,
                   const kernels::DeformGeometry& g, int64_t channels, T* grad_x);

// Offset and mask gradients (overwritten) from the column gradients, with a plan built with
// fold_mask = false: for each sampling point and each channel c of its group,
//   grad_dy += gc * sum_q dy[q] x_c[idx[q]],  grad_dx likewise,  grad_mask += gc * sum_q value[q] x_c[idx[q]].
// grad_mask may be null (no mask).
template <typename T>
void deform_offset_mask_grad(const T* x, const T* grad_columns, const kernels::DeformPoint<T>* plan,
                             const kernels::DeformGeometry& g, int64_t channels, T* grad_offset, T* grad_mask);

}  // namespace engine::cpu
