// deform.h: the per-sample math of deform_conv2d (modulated deformable convolution, DCNv2:
// Zhu, Hu, Lin, Dai, "Deformable ConvNets v2", CVPR 2019, eq. 3), portable between the CPU loops
// (tensor/cpu/deform.cpp) and a CUDA kernel (one thread per sampling point).
//
// Output pixel (oy, ox), kernel tap (i, j), offset group g read the input plane of every channel
// of group g at the fractional position
//
//   y = oy*stride_h - pad_h + i*dilation_h + dy,     x = ox*stride_w - pad_w + j*dilation_w + dx
//
// where (dy, dx) are offset channels g*2*kh*kw + 2*(i*kw + j) and that + 1 (torchvision's layout:
// interleaved (dy, dx) pairs per tap), and the sample is scaled by the mask channel g*kh*kw + i*kw + j:
//
//   out[o, oy, ox] = b[o] + sum_{c, i, j} W[o, c, i, j] * m * bilinear(x_c, y, x)
//
// bilinear() is torchvision's bilinear_interpolate: 0 when y <= -1, y >= H, x <= -1 or x >= W;
// otherwise, with y0 = floor(y), x0 = floor(x), ly = y - y0, lx = x - x0, hy = 1 - ly, hx = 1 - lx,
//
//   bilinear = hy hx v(y0, x0) + hy lx v(y0, x0+1) + ly hx v(y0+1, x0) + ly lx v(y0+1, x0+1)
//
// where a corner outside the image reads 0. Its derivatives (torchvision's get_coordinate_weight,
// which has no early return: at exactly y = -1 it gives the one-sided derivative from above, the
// value Aurora's zero-initialised offsets meet at the padded border):
//
//   d/dy = hx (v(y0+1, x0) - v(y0, x0)) + lx (v(y0+1, x0+1) - v(y0, x0+1))
//   d/dx = hy (v(y0, x0+1) - v(y0, x0)) + ly (v(y0+1, x0+1) - v(y0+1, x0))
//
// All three are linear in the four corner values, so deform_point() returns, per sampling point,
// the corner indices and the coefficients of each form (a "sampling plan" entry). The loops then
// apply one plan entry to every channel of the offset group, instead of recomputing the floor and
// the range checks per channel. deform_bilinear() and deform_coordinate_weight() are the direct
// per-element forms (what torchvision computes); the tests check both forms agree.
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

// floor in the element type (host: std::floor's float overload, not the double one; device:
// CUDA's overloads).
template <typename T>
ENGINE_HD T deform_floor(T v) {
#if defined(__CUDA_ARCH__)
  return floor(v);
#else
  return std::floor(v);
#endif
}

// Geometry of one deform_conv2d call (sizes per sample).
struct DeformGeometry {
  int64_t H = 0, W = 0;    // input plane
  int64_t Ho = 0, Wo = 0;  // output plane
  int64_t kh = 0, kw = 0;
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dilation_h = 1, dilation_w = 1;
  int64_t offset_groups = 1;
  ENGINE_HD int64_t taps() const { return kh * kw; }
  ENGINE_HD int64_t pixels() const { return Ho * Wo; }
};

// The sampling position of tap k = i*kw + j at output pixel p = oy*Wo + ox, given its offsets.
template <typename T>
ENGINE_HD void deform_position(const DeformGeometry& g, int64_t k, int64_t p, T off_y, T off_x, T& y, T& x) {
  const int64_t i = k / g.kw, j = k % g.kw, oy = p / g.Wo, ox = p % g.Wo;
  // Integer part first, then the offset, in the element type: torchvision's order of operations.
  y = T(oy * g.stride_h - g.pad_h + i * g.dilation_h) + off_y;
  x = T(ox * g.stride_w - g.pad_w + j * g.dilation_w) + off_x;
}

// Corner q of a sampling point: 0 = (y0, x0), 1 = (y0, x0+1), 2 = (y0+1, x0), 3 = (y0+1, x0+1).
// A sampling-plan entry: the value is sum_q value[q] * v[idx[q]] (times the mask in `weight`),
// d/dy = sum_q dy[q] * v[idx[q]], d/dx = sum_q dx[q] * v[idx[q]]. A corner outside the image has
// all coefficients 0 and idx 0 (a valid address, so the loops need no branch).
template <typename T>
struct DeformPoint {
  int32_t idx[4];
  T value[4];
  T dy[4];
  T dx[4];
};

// The plan entry of the point (y, x) in an H x W plane (see the header comment for the formulas).
template <typename T>
ENGINE_HD DeformPoint<T> deform_point(int64_t H, int64_t W, T y, T x) {
  DeformPoint<T> pt;
  for (int q = 0; q < 4; ++q) pt.idx[q] = 0, pt.value[q] = T(0), pt.dy[q] = T(0), pt.dx[q] = T(0);
  // Every corner is outside unless -1 <= y < H and -1 <= x < W (this also rejects NaN, and keeps
  // the floor below in int range for any offset).
  if (!(y >= T(-1) && y < T(H) && x >= T(-1) && x < T(W))) return pt;
  const T fy = deform_floor(y), fx = deform_floor(x);
  const int64_t y0 = int64_t(fy), x0 = int64_t(fx);
  const T ly = y - fy, lx = x - fx, hy = T(1) - ly, hx = T(1) - lx;
  const bool row_ok[2] = {y0 >= 0, y0 + 1 < H};  // y0 <= H-1 and y0 + 1 >= 0 hold here
  const bool col_ok[2] = {x0 >= 0, x0 + 1 < W};
  // bilinear() returns 0 at exactly y = -1 (or x = -1); so does this value form without a special
  // case: row y0 = -1 is outside and row 0 has weight ly = 0. The derivatives do not vanish there.
  const T wy[2] = {hy, ly}, wx[2] = {hx, lx};
  const T sy[2] = {T(-1), T(1)}, sx[2] = {T(-1), T(1)};
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b) {
      const int q = a * 2 + b;
      if (!(row_ok[a] && col_ok[b])) continue;
      pt.idx[q] = int32_t((y0 + a) * W + (x0 + b));
      pt.value[q] = wy[a] * wx[b];
      pt.dy[q] = sy[a] * wx[b];
      pt.dx[q] = wy[a] * sx[b];
    }
  return pt;
}

// sum_q c[q] * plane[idx[q]]: one form of a plan entry applied to one channel's plane.
template <typename T>
ENGINE_HD T deform_apply(const T* plane, const int32_t* idx, const T* c) {
  return c[0] * plane[idx[0]] + c[1] * plane[idx[1]] + c[2] * plane[idx[2]] + c[3] * plane[idx[3]];
}

// The direct per-element forms (torchvision's bilinear_interpolate and get_coordinate_weight).
template <typename T>
ENGINE_HD T deform_corner(const T* plane, int64_t H, int64_t W, int64_t yy, int64_t xx) {
  return (yy >= 0 && yy < H && xx >= 0 && xx < W) ? plane[yy * W + xx] : T(0);
}

template <typename T>
ENGINE_HD T deform_bilinear(const T* plane, int64_t H, int64_t W, T y, T x) {
  if (!(y > T(-1) && y < T(H) && x > T(-1) && x < T(W))) return T(0);
  const T fy = deform_floor(y), fx = deform_floor(x);
  const int64_t y0 = int64_t(fy), x0 = int64_t(fx);
  const T ly = y - fy, lx = x - fx, hy = T(1) - ly, hx = T(1) - lx;
  return hy * hx * deform_corner(plane, H, W, y0, x0) + hy * lx * deform_corner(plane, H, W, y0, x0 + 1) +
         ly * hx * deform_corner(plane, H, W, y0 + 1, x0) + ly * lx * deform_corner(plane, H, W, y0 + 1, x0 + 1);
}

// d bilinear / dy (y_direction) or d bilinear / dx.
template <typename T>
ENGINE_HD T deform_coordinate_weight(const T* plane, int64_t H, int64_t W, T y, T x, bool y_direction) {
  if (!(y >= T(-1) && y < T(H) && x >= T(-1) && x < T(W))) return T(0);
  const T fy = deform_floor(y), fx = deform_floor(x);
  const int64_t y0 = int64_t(fy), x0 = int64_t(fx);
  const T v00 = deform_corner(plane, H, W, y0, x0), v01 = deform_corner(plane, H, W, y0, x0 + 1);
  const T v10 = deform_corner(plane, H, W, y0 + 1, x0), v11 = deform_corner(plane, H, W, y0 + 1, x0 + 1);
  if (y_direction) {
    const T lx = x - fx;
    return lx * (v11 - v01) + (T(1) - lx) * (v10 - v00);
  }
  const T ly = y - fy;
  return ly * (v11 - v10) + (T(1) - ly) * (v01 - v00);
}

}  // namespace engine::kernels
