// im2col.h: the index math of convolution as im2col / col2im, portable (host + device).
//
// A 2-D convolution of one image slice x [C, H, W] (one group of one sample) with a kernel of
// kh x kw taps becomes a GEMM once the input is unrolled into the "column" matrix
//   col [C*kh*kw, Ho*Wo],  col[(c, i, j), (oh, ow)] = x[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
// (zero where that position falls in the padding). Then
//   conv2d:            y[o, q]   = sum_r w[o, r] col[r, q]          (y = W col)
//   conv_transpose2d:  col'      = W^T y, then x = col2im(col')    (the adjoint of conv2d in x)
//   conv2d_weight:     dw[o, r]  = sum_q gy[o, q] col[r, q]         (dw = gy col^T)
// col2im is the adjoint of im2col: x[c, h, w] = sum of col'[(c, i, j), (oh, ow)] over every tap
// (i, j) and output position (oh, ow) that reads (h, w). It is written as a gather (one x element
// per call, summing its taps in a fixed order), so every element is written exactly once: no
// atomics on the GPU, no zero fill, and results independent of the thread count.
//
// Each function computes one output element, so a CUDA kernel can call it once per thread; the
// CPU loops (tensor/cpu/conv.cpp) call the *_at forms from nested loops over decomposed indices,
// which avoids integer divisions per element.
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

// Geometry of one group of a convolution, in its own channels.
struct ConvShape {
  int64_t channels = 0;          // input channels of one group (Cin / groups)
  int64_t height = 0, width = 0;  // input H, W
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t out_h = 0, out_w = 0;  // Ho, Wo
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dilation_h = 1, dilation_w = 1;
};

// Output size of a convolution along one axis: floor((n + 2p - d(k-1) - 1) / s) + 1.
ENGINE_HD int64_t conv_out_size(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d) {
  return (n + 2 * p - d * (k - 1) - 1) / s + 1;
}
// Input size that conv_transpose2d produces along one axis: (o-1)s - 2p + d(k-1) + output_padding + 1.
ENGINE_HD int64_t conv_transpose_out_size(int64_t o, int64_t k, int64_t s, int64_t p, int64_t d, int64_t op) {
  return (o - 1) * s - 2 * p + d * (k - 1) + op + 1;
}

// The input coordinate read by output position o through tap t: o*s - p + t*d (may be outside).
ENGINE_HD int64_t conv_input_index(int64_t o, int64_t t, int64_t s, int64_t p, int64_t d) {
  return o * s - p + t * d;
}

// The range [*lo, *hi) of output positions along one axis whose tap t reads inside [0, n):
// 0 <= o*s - p + t*d < n. The CPU loops use it to split a row of im2col / col2im into zero
// padding and a plain (strided) copy; every element still equals im2col_at below.
ENGINE_HD void conv_valid_range(int64_t t, int64_t s, int64_t p, int64_t d, int64_t n, int64_t out, int64_t* lo,
                                int64_t* hi) {
  const int64_t off = t * d - p;  // input coordinate of output 0
  // smallest o with o*s + off >= 0, and smallest o with o*s + off >= n
  const int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
  const int64_t b = n - off <= 0 ? 0 : (n - off + s - 1) / s;
  *lo = min_of(a, out);
  *hi = max_of(*lo, min_of(b, out));
}

// col[(c, i, j), (oh, ow)] for the image slice x [C, H, W] (contiguous).
template <typename T>
ENGINE_HD T im2col_at(const T* x, const ConvShape& s, int64_t c, int64_t i, int64_t j, int64_t oh, int64_t ow) {
  const int64_t ih = conv_input_index(oh, i, s.stride_h, s.pad_h, s.dilation_h);
  const int64_t iw = conv_input_index(ow, j, s.stride_w, s.pad_w, s.dilation_w);
  if (ih < 0 || ih >= s.height || iw < 0 || iw >= s.width) return T(0);
  return x[(c * s.height + ih) * s.width + iw];
}

// The same element addressed by its flat row r = (c*kh + i)*kw + j and column q = oh*Wo + ow.
template <typename T>
ENGINE_HD T im2col_element(const T* x, const ConvShape& s, int64_t r, int64_t q) {
  const int64_t j = r % s.kernel_w, i = (r / s.kernel_w) % s.kernel_h, c = r / (s.kernel_w * s.kernel_h);
  return im2col_at(x, s, c, i, j, q / s.out_w, q % s.out_w);
}

// The output position along one axis that reads input coordinate h through tap t, or -1 when
// none does (h + p - t*d must be a non-negative multiple of s below the output size).
ENGINE_HD int64_t conv_output_index(int64_t h, int64_t t, int64_t s, int64_t p, int64_t d, int64_t out) {
  const int64_t v = h + p - t * d;
  if (v < 0) return -1;
  int64_t o = v;
  if (s != 1) {
    if (v % s != 0) return -1;
    o = v / s;
  }
  return o < out ? o : -1;
}

// x[c, h, w] = sum over taps (i, j) in row-major order of col[(c, i, j), (oh, ow)], where
// (oh, ow) is the output position that reads (h, w) through that tap. `ld` is the row stride
// of col (Ho*Wo for a one-image column matrix).
template <typename T>
ENGINE_HD T col2im_at(const T* col, int64_t ld, const ConvShape& s, int64_t c, int64_t h, int64_t w) {
  T acc = T(0);
  for (int64_t i = 0; i < s.kernel_h; ++i) {
    const int64_t oh = conv_output_index(h, i, s.stride_h, s.pad_h, s.dilation_h, s.out_h);
    if (oh < 0) continue;
    const T* row = col + ((c * s.kernel_h + i) * s.kernel_w) * ld + oh * s.out_w;
    for (int64_t j = 0; j < s.kernel_w; ++j) {
      const int64_t ow = conv_output_index(w, j, s.stride_w, s.pad_w, s.dilation_w, s.out_w);
      if (ow >= 0) acc += row[j * ld + ow];
    }
  }
  return acc;
}

// The same element addressed by its flat index e = (c*H + h)*W + w.
template <typename T>
ENGINE_HD T col2im_element(const T* col, int64_t ld, const ConvShape& s, int64_t e) {
  const int64_t w = e % s.width, h = (e / s.width) % s.height, c = e / (s.width * s.height);
  return col2im_at(col, ld, s, c, h, w);
}

}  // namespace engine::kernels
