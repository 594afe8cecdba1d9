// upfirdn.h: the per-output-pixel math of upfirdn2d (StyleGAN2's FIR resampling), portable
// between the CPU loops (tensor/cpu/upfirdn.cpp) and a CUDA kernel (one thread per output pixel).
//
// Along one axis, with input length L, upsampling factor u, padding p0 (before; negative crops),
// downsampling factor d and K correlation weights w[0..K-1]:
//
//   z[m] = x[(m - p0) / u]   if (m - p0) >= 0, (m - p0) % u == 0 and (m - p0) / u < L, else 0
//   out[o] = sum_{i=0}^{K-1} w[i] * z[o*d + i]
//
// z is the zero-stuffed, padded signal of StyleGAN2's reference (_upfirdn2d_ref): each pixel is
// followed by u-1 inserted zeros, then p0 zeros (or a crop of -p0 samples) come first. The padding
// after (p1) only decides the output length, which the caller computes. w is the caller's filter
// already flipped (w[i] = f[K-1-i]: correlating with the flipped filter is true convolution, as
// StyleGAN2) and scaled by the gain; see tensor/ops_upfirdn.cpp.
//
// Only the taps that land on real (not inserted, not padded) samples are visited: tap_range()
// finds the first such tap i0 (s + i0 a multiple of u, s = o*d - p0), the input sample it reads,
// and how many there are; consecutive ones are u taps and one input sample apart. In 2-D the sum
// runs over rows of taps (outer) and columns (inner), always in increasing tap order, so every
// backend adds the same terms in the same order.
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

// The taps of one output sample that read real input samples: taps first_tap, first_tap + up, ...
// (count of them) read input samples first_in, first_in + 1, ...
struct TapRange {
  int64_t first_tap = 0;
  int64_t first_in = 0;
  int64_t count = 0;
};

ENGINE_HD TapRange tap_range(int64_t o, int64_t in_len, int64_t up, int64_t down, int64_t pad0, int64_t taps) {
  TapRange r;
  const int64_t s = o * down - pad0;          // position of tap 0 in the unpadded zero-stuffed signal
  int64_t lo = s < 0 ? -s : 0;                // first tap with s + i >= 0
  const int64_t hi = min_of(taps, in_len * up - s);  // taps with s + i < L*u (exclusive bound)
  const int64_t rem = (s + lo) % up;          // s + lo >= 0 here, so rem >= 0
  if (rem != 0) lo += up - rem;               // first tap on a real (non-inserted) sample
  if (lo >= hi) return r;
  r.first_tap = lo;
  r.first_in = (s + lo) / up;
  r.count = (hi - lo + up - 1) / up;
  return r;
}

// One output sample along one axis: src points at sample 0 of the line, `stride` elements apart.
template <typename T>
ENGINE_HD T upfirdn_1d(const T* src, int64_t stride, const T* w, int64_t up, const TapRange& r) {
  T acc = T(0);
  const T* p = src + r.first_in * stride;
  const T* wp = w + r.first_tap;
  for (int64_t c = 0; c < r.count; ++c) acc += wp[c * up] * p[c * stride];
  return acc;
}

// One output pixel of the 2-D (non-separable) filter: plane is one contiguous [H, W] channel,
// w the [kh, kw] correlation weights (row-major), ry / rx the tap ranges of the pixel's row and
// column. Sum order: tap rows outer, tap columns inner.
template <typename T>
ENGINE_HD T upfirdn_2d(const T* plane, int64_t W, const T* w, int64_t kw, int64_t up_y, int64_t up_x,
                       const TapRange& ry, const TapRange& rx) {
  T acc = T(0);
  for (int64_t cy = 0; cy < ry.count; ++cy) {
    const T* row = plane + (ry.first_in + cy) * W + rx.first_in;
    const T* wrow = w + (ry.first_tap + cy * up_y) * kw + rx.first_tap;
    for (int64_t cx = 0; cx < rx.count; ++cx) acc += wrow[cx * up_x] * row[cx];
  }
  return acc;
}

// The geometry of one upfirdn2d call, as plain integers for a device kernel.
struct UpFirDnGeometry {
  int64_t H = 0, W = 0;    // input plane
  int64_t Ho = 0, Wo = 0;  // output plane
  int64_t kh = 1, kw = 1;  // filter taps
  int64_t up_x = 1, up_y = 1, down_x = 1, down_y = 1;
  int64_t pad_x0 = 0, pad_y0 = 0;
};

// Output pixel (oy, ox) of one [H, W] plane with the 2-D filter: what a CUDA thread computes.
template <typename T>
ENGINE_HD T upfirdn_2d_at(const T* plane, const T* w, const UpFirDnGeometry& g, int64_t oy, int64_t ox) {
  const TapRange ry = tap_range(oy, g.H, g.up_y, g.down_y, g.pad_y0, g.kh);
  const TapRange rx = tap_range(ox, g.W, g.up_x, g.down_x, g.pad_x0, g.kw);
  return upfirdn_2d(plane, g.W, w, g.kw, g.up_y, g.up_x, ry, rx);
}

}  // namespace engine::kernels
