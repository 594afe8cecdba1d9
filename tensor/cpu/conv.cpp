// conv.cpp (cpu): im2col / col2im loops and the GEMM plans of the three convolution primitives
// (plans described in conv.h).
//
// The loops here are the row-wise form of tensor/kernels/im2col.h: conv_valid_range splits each
// row into zero padding and a plain (strided) copy, so no element pays for an integer division
// or a bounds test. Every element equals kernels::im2col_at, and col2im adds the taps of each
// input element in the same order as kernels::col2im_at (tap rows ascending), so the CPU and a
// per-element (CUDA) kernel agree bit for bit.
#include "tensor/cpu/conv.h"

#include <algorithm>
#include <cstring>

#include "tensor/cpu/gemm.h"
#include "tensor/cpu/loops.h"
#include "tensor/tensor.h"

namespace engine::cpu {

using kernels::ConvShape;

namespace {

// The im2col matrices of the weight gradient are batched (several samples side by side) up to
// this many bytes; a larger single sample is still processed whole.
constexpr int64_t kColumnBudgetBytes = int64_t(16) << 20;

bool is_pointwise(const ConvShape& s) {
  return s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

Tensor workspace(int64_t elems, DType dtype) {
  return empty({elems}, TensorOptions{dtype, Device::cpu(), memory::Kind::workspace});
}

// Row r = (c, i, j) of the im2col matrix of x [C, H, W] into dst [Ho*Wo].
template <typename T>
void im2col_row(const T* x, const ConvShape& s, int64_t r, T* dst) {
  const int64_t kk = s.kernel_h * s.kernel_w;
  const int64_t c = r / kk, i = (r / s.kernel_w) % s.kernel_h, j = r % s.kernel_w;
  const int64_t wo = s.out_w;
  int64_t oh0, oh1, ow0, ow1;
  kernels::conv_valid_range(i, s.stride_h, s.pad_h, s.dilation_h, s.height, s.out_h, &oh0, &oh1);
  kernels::conv_valid_range(j, s.stride_w, s.pad_w, s.dilation_w, s.width, s.out_w, &ow0, &ow1);
  std::fill(dst, dst + oh0 * wo, T(0));
  // Input column of output column ow: iw0 + ow * stride (inside the row for ow in [ow0, ow1)).
  const int64_t iw0 = kernels::conv_input_index(0, j, s.stride_w, s.pad_w, s.dilation_w);
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    T* d = dst + oh * wo;
    const int64_t ih = kernels::conv_input_index(oh, i, s.stride_h, s.pad_h, s.dilation_h);
    const T* src = x + (c * s.height + ih) * s.width;
    std::fill(d, d + ow0, T(0));
    if (s.stride_w == 1) {
      if (ow1 > ow0) std::memcpy(d + ow0, src + iw0 + ow0, size_t(ow1 - ow0) * sizeof(T));
    } else {
      for (int64_t ow = ow0; ow < ow1; ++ow) d[ow] = src[iw0 + ow * s.stride_w];
    }
    std::fill(d + ow1, d + wo, T(0));
  }
  std::fill(dst + oh1 * wo, dst + s.out_h * wo, T(0));
}

// Adds the taps of channel c from col into x[c] (x[c] zeroed first): tap rows in ascending order.
template <typename T>
void col2im_channel(const T* col, int64_t ld, const ConvShape& s, int64_t c, T* xc) {
  std::fill(xc, xc + s.height * s.width, T(0));
  for (int64_t i = 0; i < s.kernel_h; ++i) {
    int64_t oh0, oh1;
    kernels::conv_valid_range(i, s.stride_h, s.pad_h, s.dilation_h, s.height, s.out_h, &oh0, &oh1);
    for (int64_t j = 0; j < s.kernel_w; ++j) {
      int64_t ow0, ow1;
      kernels::conv_valid_range(j, s.stride_w, s.pad_w, s.dilation_w, s.width, s.out_w, &ow0, &ow1);
      const T* row = col + ((c * s.kernel_h + i) * s.kernel_w + j) * ld;
      const int64_t iw0 = kernels::conv_input_index(0, j, s.stride_w, s.pad_w, s.dilation_w);
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        const int64_t ih = kernels::conv_input_index(oh, i, s.stride_h, s.pad_h, s.dilation_h);
        T* d = xc + ih * s.width;
        const T* src = row + oh * s.out_w;
        if (s.stride_w == 1) {
          if (ow1 > ow0) {
            T* dd = d + iw0 + ow0;
            const T* ss = src + ow0;
            for (int64_t q = 0; q < ow1 - ow0; ++q) dd[q] += ss[q];
          }
        } else {
          for (int64_t ow = ow0; ow < ow1; ++ow) d[iw0 + ow * s.stride_w] += src[ow];
        }
      }
    }
  }
}

template <typename T>
void fill_rows(T* dst, const T* values, int64_t rows, int64_t len) {
  for (int64_t r = 0; r < rows; ++r) std::fill(dst + r * len, dst + (r + 1) * len, values[r]);
}
template <typename T>
void add_rows(T* dst, const T* values, int64_t rows, int64_t len) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t q = 0; q < len; ++q) dst[r * len + q] += values[r];
}

}  // namespace

template <typename T>
void im2col(const T* x, const ConvShape& s, T* col, int64_t ld, bool parallel) {
  const int64_t rows = s.channels * s.kernel_h * s.kernel_w, len = s.out_h * s.out_w;
#pragma omp parallel for schedule(static) if (parallel && rows * len >= kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) im2col_row(x, s, r, col + r * ld);
}

template <typename T>
void col2im(const T* col, int64_t ld, const ConvShape& s, T* x, bool parallel) {
  const int64_t hw = s.height * s.width;
#pragma omp parallel for schedule(static) if (parallel && s.channels * hw >= kParallelGrain)
  for (int64_t c = 0; c < s.channels; ++c) col2im_channel(col, ld, s, c, x + c * hw);
}

template <typename T>
void conv2d_forward(const ConvProblem& p, const T* x, const T* w, const T* bias, T* y) {
  const ConvShape& s = p.shape;
  const int64_t groups = p.groups, cg = s.channels, og = p.out_channels / groups;
  const int64_t ckk = cg * s.kernel_h * s.kernel_w, hw = s.height * s.width, ohw = s.out_h * s.out_w;
  const bool pointwise = is_pointwise(s);
  const int64_t items = p.batch * groups;
  const bool parallel = gemm_items_parallel(items, og, ohw, ckk);
  Tensor buf;
  T* cols = nullptr;
  if (!pointwise) {
    buf = workspace((parallel ? max_slots() : 1) * ckk * ohw, p.dtype);
    cols = buf.data<T>();
  }
  for_each_item(items, parallel, [&](int64_t it, int slot) {
    const int64_t n = it / groups, g = it % groups;
    const T* xs = x + (n * p.in_channels + g * cg) * hw;
    T* ys = y + (n * p.out_channels + g * og) * ohw;
    const T* col = xs;  // 1x1, stride 1, no padding: the image is its own column matrix
    if (!pointwise) {
      T* c = cols + int64_t(slot) * ckk * ohw;
      im2col(xs, s, c, ohw, !parallel);
      col = c;
    }
    if (bias) fill_rows(ys, bias + g * og, og, ohw);
    gemm<T>(false, false, og, ohw, ckk, T(1), w + g * og * ckk, ckk, col, ohw, T(bias ? 1 : 0), ys, ohw);
  });
}

template <typename T>
void conv2d_input(const ConvProblem& p, const T* y, const T* w, const T* bias, T* x) {
  const ConvShape& s = p.shape;
  const int64_t groups = p.groups, cg = s.channels, og = p.out_channels / groups;
  const int64_t ckk = cg * s.kernel_h * s.kernel_w, hw = s.height * s.width, ohw = s.out_h * s.out_w;
  const bool pointwise = is_pointwise(s);
  const int64_t items = p.batch * groups;
  const bool parallel = gemm_items_parallel(items, ckk, ohw, og);
  Tensor buf;
  T* cols = nullptr;
  if (!pointwise) {
    buf = workspace((parallel ? max_slots() : 1) * ckk * ohw, p.dtype);
    cols = buf.data<T>();
  }
  for_each_item(items, parallel, [&](int64_t it, int slot) {
    const int64_t n = it / groups, g = it % groups;
    T* xs = x + (n * p.in_channels + g * cg) * hw;
    const T* ys = y + (n * p.out_channels + g * og) * ohw;
    const T* wg = w + g * og * ckk;
    if (pointwise) {
      if (bias) fill_rows(xs, bias + g * cg, cg, hw);
      gemm<T>(true, false, cg, hw, og, T(1), wg, ckk, ys, ohw, T(bias ? 1 : 0), xs, hw);
      return;
    }
    T* col = cols + int64_t(slot) * ckk * ohw;
    gemm<T>(true, false, ckk, ohw, og, T(1), wg, ckk, ys, ohw, T(0), col, ohw);
    col2im(col, ohw, s, xs, !parallel);
    if (bias) add_rows(xs, bias + g * cg, cg, hw);
  });
}

template <typename T>
void conv2d_weight(const ConvProblem& p, const T* x, const T* gy, T* gw) {
  const ConvShape& s = p.shape;
  const int64_t groups = p.groups, cg = s.channels, og = p.out_channels / groups, batch = p.batch;
  const int64_t ckk = cg * s.kernel_h * s.kernel_w, hw = s.height * s.width, ohw = s.out_h * s.out_w;
  const bool pointwise = is_pointwise(s);
  if (batch == 0 || ohw == 0) {
    std::fill(gw, gw + p.out_channels * ckk, T(0));
    return;
  }

  // Groups as items: each sums its samples with one GEMM per sample (beta = 1 after the first).
  // Used with one sample per group (batch-grouped weights) or many small groups.
  if (batch == 1 || (groups > 1 && gemm_is_small(og, ckk, batch * ohw))) {
    const bool parallel = gemm_is_small(og, ckk, ohw) && gemm_items_parallel(groups, og, ckk, ohw * batch);
    Tensor buf;
    T* cols = nullptr;
    if (!pointwise) {
      buf = workspace((parallel ? max_slots() : 1) * ckk * ohw, p.dtype);
      cols = buf.data<T>();
    }
    for_each_item(groups, parallel, [&](int64_t g, int slot) {
      for (int64_t n = 0; n < batch; ++n) {
        const T* xs = x + (n * p.in_channels + g * cg) * hw;
        const T* col = xs;
        if (!pointwise) {
          T* c = cols + int64_t(slot) * ckk * ohw;
          im2col(xs, s, c, ohw, !parallel);
          col = c;
        }
        gemm<T>(false, true, og, ckk, ohw, T(1), gy + (n * p.out_channels + g * og) * ohw, ohw, col, ohw,
                T(n == 0 ? 0 : 1), gw + g * og * ckk, ckk);
      }
    });
    return;
  }

  // Samples side by side: cols [ckk, nb*ohw] and gys [og, nb*ohw], then one GEMM with
  // K = nb*ohw per chunk of nb samples (chunks accumulate in order, beta = 1 after the first).
  const int64_t per_sample = (ckk + og) * ohw * int64_t(sizeof(T));
  const int64_t nb = std::clamp<int64_t>(kColumnBudgetBytes / std::max<int64_t>(per_sample, 1), 1, batch);
  const int64_t ld = nb * ohw;
  Tensor buf = workspace((ckk + og) * ld, p.dtype);
  T* cols = buf.data<T>();
  T* gys = cols + ckk * ld;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t n0 = 0; n0 < batch; n0 += nb) {
      const int64_t cnt = std::min(nb, batch - n0), k = cnt * ohw;
      // One task per (sample, row) of either matrix.
      const int64_t tasks = cnt * (ckk + og);
#pragma omp parallel for schedule(static) if (tasks * ohw >= kParallelGrain)
      for (int64_t t = 0; t < tasks; ++t) {
        const int64_t j = t / (ckk + og), r = t % (ckk + og), n = n0 + j;
        if (r < ckk) {
          const T* xs = x + (n * p.in_channels + g * cg) * hw;
          T* dst = cols + r * k + j * ohw;  // rows of this chunk are k long
          if (pointwise) {
            std::memcpy(dst, xs + r * hw, size_t(ohw) * sizeof(T));
          } else {
            im2col_row(xs, s, r, dst);
          }
        } else {
          const int64_t o = r - ckk;
          std::memcpy(gys + o * k + j * ohw, gy + (n * p.out_channels + g * og + o) * ohw, size_t(ohw) * sizeof(T));
        }
      }
      gemm<T>(false, true, og, ckk, k, T(1), gys, k, cols, k, T(n0 == 0 ? 0 : 1), gw + g * og * ckk, ckk);
    }
  }
}

#define ENGINE_CONV_INSTANTIATE(T)                                                                 \
  template void im2col<T>(const T*, const ConvShape&, T*, int64_t, bool);                          \
  template void col2im<T>(const T*, int64_t, const ConvShape&, T*, bool);                          \
  template void conv2d_forward<T>(const ConvProblem&, const T*, const T*, const T*, T*);           \
  template void conv2d_input<T>(const ConvProblem&, const T*, const T*, const T*, T*);             \
  template void conv2d_weight<T>(const ConvProblem&, const T*, const T*, T*);
ENGINE_CONV_INSTANTIATE(float)
ENGINE_CONV_INSTANTIATE(double)
#undef ENGINE_CONV_INSTANTIATE

}  // namespace engine::cpu
