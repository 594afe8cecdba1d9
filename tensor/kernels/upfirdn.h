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
//
// Two forms of the same sums: per output pixel (upfirdn_1d, upfirdn_2d, upfirdn_2d_at: one CUDA
// thread each) and per output row (tap_columns, tap_axpy: the CPU's vectorised loops).
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

// ---- Row form (CPU): the same sums, one tap at a time over a whole output row ---------------
// For a fixed tap index t (of K) along an axis, the outputs o in [0, out_len) whose tap t reads a
// real sample (m = o*down + t - pad0 a multiple of up, 0 <= m < in_len*up) form an arithmetic
// progression: o = first_out + k*out_step reads sample first_in + k*in_step, k < count, with
// out_step = up/gcd(up, down) and in_step = down/gcd(up, down). Sweeping the taps in increasing
// order and, for each, adding w[t] * sample into every such output adds to each output exactly
// the terms of upfirdn_1d / upfirdn_2d in exactly their order, so both forms give the same values
// (bit for bit unless a compiler fuses multiply-adds differently in the two); the row form's
// inner loop is a (strided) axpy that vectorises.
struct TapColumns {
  int64_t first_out = 0, out_step = 1;
  int64_t first_in = 0, in_step = 1;
  int64_t count = 0;
};

ENGINE_HD int64_t gcd_of(int64_t a, int64_t b) {
  while (b != 0) {
    const int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

ENGINE_HD TapColumns tap_columns(int64_t t, int64_t in_len, int64_t out_len, int64_t up, int64_t down, int64_t pad0) {
  TapColumns c;
  const int64_t g = gcd_of(up, down);
  c.out_step = up / g;
  c.in_step = down / g;
  // smallest o >= 0 with m = o*down + t - pad0 >= 0, then the first of those with m % up == 0
  // (one is found within out_step candidates, or none exists)
  const int64_t need = pad0 - t;  // o*down >= need
  int64_t o = need > 0 ? (need + down - 1) / down : 0;
  int64_t tries = 0;
  while (tries < c.out_step && (o * down + t - pad0) % up != 0) ++o, ++tries;
  if (tries == c.out_step) return c;
  c.first_out = o;
  c.first_in = (o * down + t - pad0) / up;
  if (c.first_out >= out_len || c.first_in >= in_len) return c;
  const int64_t by_out = (out_len - c.first_out + c.out_step - 1) / c.out_step;
  const int64_t by_in = (in_len - c.first_in + c.in_step - 1) / c.in_step;
  c.count = min_of(by_out, by_in);
  return c;
}

// Ask the host compiler to vectorise a loop whose iterations are independent (GCC's -O2 cost
// model does not vectorise loops of unknown length on its own); nvcc ignores it.
#if defined(__CUDACC__)
#define ENGINE_UPFIRDN_SIMD
#else
#define ENGINE_UPFIRDN_SIMD _Pragma("omp simd")
#endif

// dst[first_out + k*out_step] += w * src[first_in + k*in_step] for k < count. dst and src do not
// overlap (an output row and an input row).
template <typename T>
ENGINE_HD void tap_axpy(T* dst, const T* src, T w, const TapColumns& c) {
  T* d = dst + c.first_out;
  const T* s = src + c.first_in;
  const int64_t n = c.count, os = c.out_step, is = c.in_step;
  if (os == 1 && is == 1) {
    ENGINE_UPFIRDN_SIMD
    for (int64_t k = 0; k < n; ++k) d[k] += w * s[k];
  } else if (os == 1) {
    ENGINE_UPFIRDN_SIMD
    for (int64_t k = 0; k < n; ++k) d[k] += w * s[k * is];
  } else if (is == 1) {
    ENGINE_UPFIRDN_SIMD
    for (int64_t k = 0; k < n; ++k) d[k * os] += w * s[k];
  } else {
    for (int64_t k = 0; k < n; ++k) d[k * os] += w * s[k * is];
  }
}

}  // namespace engine::kernels
