// pool.h: one output pixel of max_pool2d / avg_pool2d (tensor/ops_pool.cpp), portable between the
// CPU loop (one (n, c) plane per OpenMP iteration) and the CUDA kernel (one thread per pixel).
//
//   max:  y[i, j] = max over the window clipped to the image (NaN if any value there is NaN)
//   avg:  y[i, j] = sum over the clipped window / (count_include_pad ? kh*kw : #clipped window)
//
// The ops allow padding <= kernel/2 only, so every clipped window holds at least one pixel.
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

struct PoolGeometry {
  int64_t h = 0, w = 0, ho = 0, wo = 0;  // input and output plane
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
};

// The window of output pixel (i, j) clipped to the image: rows [y0, y1), columns [x0, x1).
struct PoolWindow {
  int64_t y0, y1, x0, x1;
};
ENGINE_HD PoolWindow pool_window(const PoolGeometry& g, int64_t i, int64_t j) {
  PoolWindow r;
  r.y0 = max_of<int64_t>(i * g.sh - g.ph, 0);
  r.y1 = min_of<int64_t>(i * g.sh - g.ph + g.kh, g.h);
  r.x0 = max_of<int64_t>(j * g.sw - g.pw, 0);
  r.x1 = min_of<int64_t>(j * g.sw - g.pw + g.kw, g.w);
  return r;
}

template <typename T>
ENGINE_HD T max_pool_at(const T* plane, const PoolGeometry& g, int64_t i, int64_t j) {
  const PoolWindow r = pool_window(g, i, j);
  // Selects only (no branch in the loop): the max, and a NaN seen in the window if any.
  T m = plane[r.y0 * g.w + r.x0];
  T nan_value = T(0);
  bool nan = false;
  for (int64_t y = r.y0; y < r.y1; ++y)
    for (int64_t x = r.x0; x < r.x1; ++x) {
      const T v = plane[y * g.w + x];
      const bool is_nan = v != v;
      nan |= is_nan;
      nan_value = is_nan ? v : nan_value;
      m = v > m ? v : m;
    }
  return nan ? nan_value : m;
}

template <typename T>
ENGINE_HD T avg_pool_at(const T* plane, const PoolGeometry& g, bool count_include_pad, int64_t i, int64_t j) {
  const PoolWindow r = pool_window(g, i, j);
  T acc = T(0);
  for (int64_t y = r.y0; y < r.y1; ++y)
    for (int64_t x = r.x0; x < r.x1; ++x) acc += plane[y * g.w + x];
  const int64_t count = count_include_pad ? g.kh * g.kw : (r.y1 - r.y0) * (r.x1 - r.x0);
  return acc / T(count);
}

}  // namespace engine::kernels
