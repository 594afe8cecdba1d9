// upfirdn.cpp (cpu): OpenMP loops of upfirdn2d (see tensor/kernels/upfirdn.h for the math).
//
// The tap ranges of the output columns are the same for every row, so they are computed once per
// call; the tap range of an output row is computed once per row. The per-element sums are the
// kernel functions themselves (kernels::upfirdn_1d / upfirdn_2d), except in the y pass, which
// adds whole rows (w * input row into the output row, vectorisable) in the same tap order, so it
// produces bit-identical values to kernels::upfirdn_1d with a row stride.
#include "tensor/cpu/upfirdn.h"

#include <vector>

#include "tensor/cpu/loops.h"

namespace engine::cpu {

namespace {

std::vector<kernels::TapRange> column_ranges(int64_t Wo, int64_t W, int64_t up, int64_t down, int64_t pad0,
                                             int64_t taps) {
  std::vector<kernels::TapRange> r(size_t(Wo > 0 ? Wo : 0));
  for (int64_t ox = 0; ox < Wo; ++ox) r[size_t(ox)] = kernels::tap_range(ox, W, up, down, pad0, taps);
  return r;
}

}  // namespace

template <typename T>
void upfirdn2d_2d(const T* x, T* out, int64_t planes, const kernels::UpFirDnGeometry& g, const T* w) {
  const std::vector<kernels::TapRange> rx = column_ranges(g.Wo, g.W, g.up_x, g.down_x, g.pad_x0, g.kw);
  const kernels::TapRange* rxp = rx.data();
  const int64_t rows = planes * g.Ho;
  const int64_t work = rows * g.Wo * g.kh * g.kw / (g.up_x * g.up_y);
#pragma omp parallel for schedule(static) if (work >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t plane = r / g.Ho, oy = r % g.Ho;
    const T* src = x + plane * g.H * g.W;
    T* dst = out + r * g.Wo;
    const kernels::TapRange ry = kernels::tap_range(oy, g.H, g.up_y, g.down_y, g.pad_y0, g.kh);
    for (int64_t ox = 0; ox < g.Wo; ++ox)
      dst[ox] = kernels::upfirdn_2d(src, g.W, w, g.kw, g.up_y, g.up_x, ry, rxp[ox]);
  }
}

template <typename T>
void upfirdn2d_pass_x(const T* x, T* out, int64_t rows, int64_t W, int64_t Wo, const T* w, int64_t taps,
                      int64_t up, int64_t down, int64_t pad0) {
  const std::vector<kernels::TapRange> rx = column_ranges(Wo, W, up, down, pad0, taps);
  const kernels::TapRange* rxp = rx.data();
  const int64_t work = rows * Wo * taps / up;
#pragma omp parallel for schedule(static) if (work >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const T* src = x + r * W;
    T* dst = out + r * Wo;
    for (int64_t ox = 0; ox < Wo; ++ox) dst[ox] = kernels::upfirdn_1d(src, 1, w, up, rxp[ox]);
  }
}

template <typename T>
void upfirdn2d_pass_y(const T* x, T* out, int64_t planes, int64_t H, int64_t Ho, int64_t W, const T* w,
                      int64_t taps, int64_t up, int64_t down, int64_t pad0) {
  const int64_t rows = planes * Ho;
  const int64_t work = rows * W * taps / up;
#pragma omp parallel for schedule(static) if (work >= kParallelGrain && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t plane = r / Ho, oy = r % Ho;
    const T* src = x + plane * H * W;
    T* dst = out + r * W;
    const kernels::TapRange ry = kernels::tap_range(oy, H, up, down, pad0, taps);
    for (int64_t i = 0; i < W; ++i) dst[i] = T(0);
    // Same terms, same order as kernels::upfirdn_1d(src + i, W, w, up, ry) for each column i.
    for (int64_t c = 0; c < ry.count; ++c) {
      const T wv = w[ry.first_tap + c * up];
      const T* row = src + (ry.first_in + c) * W;
      for (int64_t i = 0; i < W; ++i) dst[i] += wv * row[i];
    }
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
