// deform.cpp (cpu): OpenMP loops of deform_conv2d (see tensor/cpu/deform.h for the layouts and
// tensor/kernels/deform.h for the math).
//
// The sampling plan is built once per sample and offset group (one floor and range check per
// sampling point), then applied to every channel of the group: the inner loops are gathers of
// four corners with precomputed coefficients.
#include "tensor/cpu/deform.h"

#include <algorithm>

#include "tensor/cpu/loops.h"

namespace engine::cpu {

using kernels::DeformGeometry;
using kernels::DeformPoint;

template <typename T>
void deform_plan(const T* offset, const T* mask, const DeformGeometry& g, bool fold_mask, DeformPoint<T>* plan) {
  const int64_t K = g.taps(), P = g.pixels();
  const int64_t total = g.offset_groups * K * P;
#pragma omp parallel for schedule(static) if (total >= kParallelGrain / 16)
  for (int64_t e = 0; e < total; ++e) {
    const int64_t gk = e / P, p = e % P, grp = gk / K, k = gk % K;
    const T off_y = offset[(grp * 2 * K + 2 * k) * P + p];
    const T off_x = offset[(grp * 2 * K + 2 * k + 1) * P + p];
    T y, x;
    kernels::deform_position(g, k, p, off_y, off_x, y, x);
    DeformPoint<T> pt = kernels::deform_point(g.H, g.W, y, x);
    if (mask) {
      const T m = mask[gk * P + p];
      for (int q = 0; q < 4; ++q) {
        if (fold_mask) {
          pt.value[q] *= m;
        } else {
          pt.dy[q] *= m;
          pt.dx[q] *= m;
        }
      }
    }
    plan[e] = pt;
  }
}

template <typename T>
void deform_im2col(const T* x, const DeformPoint<T>* plan, const T* mask, const DeformGeometry& g, int64_t channels,
                   T* columns) {
  const int64_t K = g.taps(), P = g.pixels(), HW = g.H * g.W;
  const int64_t per_group = channels / g.offset_groups;
  const int64_t rows = channels * K;
#pragma omp parallel for schedule(static) if (rows * P >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t c = r / K, k = r % K, gk = (c / per_group) * K + k;
    const T* plane = x + c * HW;
    const DeformPoint<T>* pts = plan + gk * P;
    T* dst = columns + r * P;
    if (mask) {
      const T* m = mask + gk * P;
      for (int64_t p = 0; p < P; ++p) dst[p] = m[p] * kernels::deform_apply(plane, pts[p].idx, pts[p].value);
    } else {
      for (int64_t p = 0; p < P; ++p) dst[p] = kernels::deform_apply(plane, pts[p].idx, pts[p].value);
    }
  }
}

template <typename T>
void deform_col2im(const T* grad_columns, const DeformPoint<T>* plan, const T* mask, const DeformGeometry& g,
                   int64_t channels, T* grad_x) {
  const int64_t K = g.taps(), P = g.pixels(), HW = g.H * g.W;
  const int64_t per_group = channels / g.offset_groups;
  // One channel per iteration: its plane receives scatters only from its own K rows of columns,
  // so no two threads write the same element and the order of the adds is fixed.
#pragma omp parallel for schedule(static) if (channels * K * P >= kParallelGrain / 4 && channels > 1)
  for (int64_t c = 0; c < channels; ++c) {
    T* plane = grad_x + c * HW;
    std::fill(plane, plane + HW, T(0));
    for (int64_t k = 0; k < K; ++k) {
      const int64_t gk = (c / per_group) * K + k;
      const DeformPoint<T>* pts = plan + gk * P;
      const T* gc = grad_columns + (c * K + k) * P;
      const T* m = mask ? mask + gk * P : nullptr;
      for (int64_t p = 0; p < P; ++p) {
        const T v = m ? m[p] * gc[p] : gc[p];
        const DeformPoint<T>& pt = pts[p];
        // Corners outside the image have coefficient 0 and index 0: adding 0 is harmless.
        for (int q = 0; q < 4; ++q) plane[pt.idx[q]] += pt.value[q] * v;
      }
    }
  }
}

template <typename T>
void deform_offset_mask_grad(const T* x, const T* grad_columns, const DeformPoint<T>* plan, const DeformGeometry& g,
                             int64_t channels, T* grad_offset, T* grad_mask) {
  constexpr int64_t kBlock = 64;  // sampling points per work item (accumulators stay in L1)
  const int64_t K = g.taps(), P = g.pixels(), HW = g.H * g.W;
  const int64_t per_group = channels / g.offset_groups;
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  const int64_t items = g.offset_groups * K * blocks;
#pragma omp parallel for schedule(static) if (channels * K * P >= kParallelGrain / 4 && items > 1)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t gk = it / blocks, p0 = (it % blocks) * kBlock, grp = gk / K, k = gk % K;
    const int64_t n = std::min(kBlock, P - p0);
    T acc_y[kBlock], acc_x[kBlock], acc_m[kBlock];
    for (int64_t i = 0; i < n; ++i) acc_y[i] = acc_x[i] = acc_m[i] = T(0);
    const DeformPoint<T>* pts = plan + gk * P + p0;
    for (int64_t c = grp * per_group; c < (grp + 1) * per_group; ++c) {
      const T* plane = x + c * HW;
      const T* gc = grad_columns + (c * K + k) * P + p0;
      for (int64_t i = 0; i < n; ++i) {
        const DeformPoint<T>& pt = pts[i];
        const T v0 = plane[pt.idx[0]], v1 = plane[pt.idx[1]], v2 = plane[pt.idx[2]], v3 = plane[pt.idx[3]];
        acc_y[i] += gc[i] * (pt.dy[0] * v0 + pt.dy[1] * v1 + pt.dy[2] * v2 + pt.dy[3] * v3);
        acc_x[i] += gc[i] * (pt.dx[0] * v0 + pt.dx[1] * v1 + pt.dx[2] * v2 + pt.dx[3] * v3);
        acc_m[i] += gc[i] * (pt.value[0] * v0 + pt.value[1] * v1 + pt.value[2] * v2 + pt.value[3] * v3);
      }
    }
    T* gy = grad_offset + (grp * 2 * K + 2 * k) * P + p0;
    T* gx = grad_offset + (grp * 2 * K + 2 * k + 1) * P + p0;
    for (int64_t i = 0; i < n; ++i) gy[i] = acc_y[i], gx[i] = acc_x[i];
    if (grad_mask) {
      T* gm = grad_mask + gk * P + p0;
      for (int64_t i = 0; i < n; ++i) gm[i] = acc_m[i];
    }
  }
}

#define ENGINE_DEFORM_INSTANTIATE(T)                                                                          \
  template void deform_plan<T>(const T*, const T*, const DeformGeometry&, bool, DeformPoint<T>*);             \
  template void deform_im2col<T>(const T*, const DeformPoint<T>*, const T*, const DeformGeometry&, int64_t, T*); \
  template void deform_col2im<T>(const T*, const DeformPoint<T>*, const T*, const DeformGeometry&, int64_t, T*); \
  template void deform_offset_mask_grad<T>(const T*, const T*, const DeformPoint<T>*, const DeformGeometry&,    \
                                           int64_t, T*, T*);
ENGINE_DEFORM_INSTANTIATE(float)
ENGINE_DEFORM_INSTANTIATE(double)
#undef ENGINE_DEFORM_INSTANTIATE

}  // namespace engine::cpu
