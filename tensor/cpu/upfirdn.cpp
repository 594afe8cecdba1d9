// upfirdn.cpp (cpu): OpenMP loops of upfirdn2d (see tensor/kernels/upfirdn.h for the math).
//
// The CPU uses the kernels' row form: for each output row, the taps are swept in increasing
// order and each one adds w * (a strided slice of an input row) into the whole output row
// (kernels::tap_axpy). That adds to every output pixel exactly the terms of the per-pixel form
// (kernels::upfirdn_2d_at, what a CUDA thread computes) in the same order, but its inner loop
// vectorises. Which output pixels a tap column reaches (kernels::tap_columns) is the same for
// every row, so it is computed once per call; the tap rows of an output row once per row.
#include "tensor/cpu/upfirdn.h"

#include <vector>

#include "tensor/cpu/loops.h"

namespace engine::cpu {

namespace {

std::vector<kernels::TapColumns> column_plans(int64_t taps, int64_t in_len, int64_t out_len, int64_t up,
                                              int64_t down, int64_t pad0) {
  std::vector<kernels::TapColumns> c(static_cast<size_t>(taps));
  for (int64_t t = 0; t < taps; ++t) c[size_t(t)] = kernels::tap_columns(t, in_len, out_len, up, down, pad0);
  return c;
}

}  // namespace

template <typename T>
void upfirdn2d_2d(const T* x, T* out, int64_t planes, const kernels::UpFirDnGeometry& g, const T* w) {
  const std::vector<kernels::TapColumns> cols = column_plans(g.kw, g.W, g.Wo, g.up_x, g.down_x, g.pad_x0);
  const kernels::TapColumns* cp = cols.data();
  const int64_t rows = planes * g.Ho;
  const int64_t work = rows * g.Wo * g.kh * g.kw / (g.up_x * g.up_y);
#pragma omp parallel for schedule(static) if (work >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t plane = r / g.Ho, oy = r % g.Ho;
    const T* src = x + plane * g.H * g.W;
    T* dst = out + r * g.Wo;
    for (int64_t i = 0; i < g.Wo; ++i) dst[i] = T(0);
    const kernels::TapRange ry = kernels::tap_range(oy, g.H, g.up_y, g.down_y, g.pad_y0, g.kh);
    for (int64_t cy = 0; cy < ry.count; ++cy) {
      const T* row = src + (ry.first_in + cy) * g.W;
      const T* wrow = w + (ry.first_tap + cy * g.up_y) * g.kw;
      for (int64_t tx = 0; tx < g.kw; ++tx)
        if (cp[tx].count > 0) kernels::tap_axpy(dst, row, wrow[tx], cp[tx]);
    }
  }
}

template <typename T>
void upfirdn2d_pass_x(const T* x, T* out, int64_t rows, int64_t W, int64_t Wo, const T* w, int64_t taps,
                      int64_t up, int64_t down, int64_t pad0) {
  const std::vector<kernels::TapColumns> cols = column_plans(taps, W, Wo, up, down, pad0);
  const kernels::TapColumns* cp = cols.data();
  const int64_t work = rows * Wo * taps / up;
#pragma omp parallel for schedule(static) if (work >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T* src = x + r * W;
    T* dst = out + r * Wo;
    for (int64_t i = 0; i < Wo; ++i) dst[i] = T(0);
    for (int64_t t = 0; t < taps; ++t)
      if (cp[t].count > 0) kernels::tap_axpy(dst, src, w[t], cp[t]);
  }
}

template <typename T>
void upfirdn2d_pass_y(const T* x, T* out, int64_t planes, int64_t H, int64_t Ho, int64_t W, const T* w,
                      int64_t taps, int64_t up, int64_t down, int64_t pad0) {
  const int64_t rows = planes * Ho;
  const int64_t work = rows * W * taps / up;
  kernels::TapColumns whole_row;  // every column, contiguous
  whole_row.count = W;
#pragma omp parallel for schedule(static) if (work >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t plane = r / Ho, oy = r % Ho;
    const T* src = x + plane * H * W;
    T* dst = out + r * W;
    for (int64_t i = 0; i < W; ++i) dst[i] = T(0);
    const kernels::TapRange ry = kernels::tap_range(oy, H, up, down, pad0, taps);
    for (int64_t c = 0; c < ry.count; ++c)
      kernels::tap_axpy(dst, src + (ry.first_in + c) * W, w[ry.first_tap + c * up], whole_row);
  }
}

#define ENGINE_UPFIRDN_INSTANTIATE(T)                                                                       \
  template void upfirdn2d_2d<T>(const T*, T*, int64_t, const kernels::UpFirDnGeometry&, const T*);          \
  template void upfirdn2d_pass_x<T>(const T*, T*, int64_t, int64_t, int64_t, const T*, int64_t, int64_t,     \
                                    int64_t, int64_t);                                                       \
  template void upfirdn2d_pass_y<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, const T*, int64_t,     \
                                    int64_t, int64_t, int64_t);
ENGINE_UPFIRDN_INSTANTIATE(float)
ENGINE_UPFIRDN_INSTANTIATE(double)
#undef ENGINE_UPFIRDN_INSTANTIATE

}  // namespace engine::cpu
