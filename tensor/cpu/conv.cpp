// conv.cpp (cpu): im2col / col2im loops and the GEMM plans of the three convolution primitives
// (plans described in conv.h).
//
// The loops here are the row-wise form of tensor/kernels/im2col.h: conv_valid_range splits each
// row into zero padding and a plain (strided) copy, so no element pays for an integer division
// or a bounds test. Every element equals kernels::im2col_at, and col2im of a whole image adds the
// taps of each input element in the same order as kernels::col2im_at (tap rows ascending), so
// the CPU and a per-element (CUDA) kernel agree bit for bit. The blocked input gradient (column
// blocks of output rows, see conv2d_input) adds block by block: the same sum, in an order fixed
// by the sizes alone.
#include "tensor/cpu/conv.h"

#include <algorithm>
#include <cstring>

#include "tensor/cpu/gemm.h"
#include "tensor/cpu/loops.h"
#include "tensor/tensor.h"

namespace engine::cpu {

using kernels::ConvShape;

namespace {

// The weight gradient sums over samples in this many independent chunks (fewer with a smaller
// batch), each into its own partial gradient: parallel work without thread-count-dependent sums.
constexpr int64_t kWeightChunks = 8;
// Column blocks (of output rows) are sized to stay in a core's L2 between im2col and GEMM.
constexpr int64_t kColumnBlockBytes = int64_t(256) << 10;

bool is_pointwise(const ConvShape& s) {
  return s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

Tensor workspace(int64_t elems, DType dtype) {
  return empty({elems}, TensorOptions{dtype, Device::cpu(), memory::Kind::workspace});
}

// Row r = (c, i, j) of the im2col matrix of x [C, H, W], output rows [oh_a, oh_b) only, into
// dst [(oh_b - oh_a) * Wo].
template <typename T>
void im2col_row(const T* x, const ConvShape& s, int64_t r, int64_t oh_a, int64_t oh_b, T* dst) {
  const int64_t kk = s.kernel_h * s.kernel_w;
  const int64_t c = r / kk, i = (r / s.kernel_w) % s.kernel_h, j = r % s.kernel_w;
  const int64_t wo = s.out_w, base = oh_a * wo;  // dst index of output position (oh, ow): oh*wo + ow - base
  int64_t oh0, oh1, ow0, ow1;
  kernels::conv_valid_range(i, s.stride_h, s.pad_h, s.dilation_h, s.height, s.out_h, &oh0, &oh1);
  kernels::conv_valid_range(j, s.stride_w, s.pad_w, s.dilation_w, s.width, s.out_w, &ow0, &ow1);
  oh0 = std::clamp(oh0, oh_a, oh_b);
  oh1 = std::clamp(oh1, oh0, oh_b);
  std::fill(dst, dst + (oh0 * wo - base), T(0));
  // Input column of output column ow: iw0 + ow * stride (inside the row for ow in [ow0, ow1)).
  const int64_t iw0 = kernels::conv_input_index(0, j, s.stride_w, s.pad_w, s.dilation_w);
  if (s.stride_h == 1 && s.stride_w == 1 && s.width == wo && oh1 > oh0) {
    // "Same" convolution (stride 1, output as wide as the input): the valid rows of this tap
    // are one contiguous shifted block of the input plane, so copy them at once, then zero the
    // columns that fall into the left/right padding (they picked up neighbouring rows' pixels).
    // Source elements outside the plane are skipped: they land only in those columns.
    const T* plane = x + c * s.height * s.width;
    const int64_t plane_size = s.height * s.width;
    const int64_t src0 = kernels::conv_input_index(oh0, i, 1, s.pad_h, s.dilation_h) * s.width + iw0;
    const int64_t e0 = oh0 * wo - base, e1 = oh1 * wo - base;  // source index of dst[e]: src0 + e - e0
    const int64_t lo = std::max<int64_t>(e0, e0 - src0), hi = std::min<int64_t>(e1, e0 - src0 + plane_size);
    std::fill(dst + e0, dst + std::max(lo, e0), T(0));
    if (hi > lo) std::memcpy(dst + lo, plane + src0 + (lo - e0), size_t(hi - lo) * sizeof(T));
    std::fill(dst + std::max(hi, lo), dst + e1, T(0));
    if (ow0 > 0 || ow1 < wo)
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        T* d = dst + (oh * wo - base);
        std::fill(d, d + ow0, T(0));
        std::fill(d + ow1, d + wo, T(0));
      }
  } else {
    for (int64_t oh = oh0; oh < oh1; ++oh) {
      T* d = dst + (oh * wo - base);
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
  }
  std::fill(dst + (oh1 * wo - base), dst + (oh_b * wo - base), T(0));
}

// Adds into x[c] the taps of channel c from col, whose columns are the output rows [oh_a, oh_b)
// ((oh - oh_a) * Wo + ow), tap rows in ascending order.
template <typename T>
void col2im_channel(const T* col, int64_t ld, const ConvShape& s, int64_t c, int64_t oh_a, int64_t oh_b, T* xc) {
  for (int64_t i = 0; i < s.kernel_h; ++i) {
    int64_t oh0, oh1;
    kernels::conv_valid_range(i, s.stride_h, s.pad_h, s.dilation_h, s.height, s.out_h, &oh0, &oh1);
    oh0 = std::clamp(oh0, oh_a, oh_b);
    oh1 = std::clamp(oh1, oh0, oh_b);
    for (int64_t j = 0; j < s.kernel_w; ++j) {
      int64_t ow0, ow1;
      kernels::conv_valid_range(j, s.stride_w, s.pad_w, s.dilation_w, s.width, s.out_w, &ow0, &ow1);
      if (ow1 <= ow0) continue;
      const T* row = col + ((c * s.kernel_h + i) * s.kernel_w + j) * ld;
      const int64_t iw0 = kernels::conv_input_index(0, j, s.stride_w, s.pad_w, s.dilation_w);
      for (int64_t oh = oh0; oh < oh1; ++oh) {
        const int64_t ih = kernels::conv_input_index(oh, i, s.stride_h, s.pad_h, s.dilation_h);
        T* d = xc + ih * s.width;
        const T* src = row + (oh - oh_a) * s.out_w;
        if (s.stride_w == 1) {
          T* dd = d + iw0 + ow0;
          const T* ss = src + ow0;
#pragma omp simd
          for (int64_t q = 0; q < ow1 - ow0; ++q) dd[q] += ss[q];
        } else {
#pragma omp simd
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

// Sizes shared by the three plans: per group, in channels (cg), out channels (og), rows of the
// column matrix (ckk = cg*kh*kw), input and output pixels (hw, ohw).
struct ConvSizes {
  int64_t groups, cg, og, ckk, hw, ohw;
};
ConvSizes sizes_of(const ConvProblem& p) {
  const ConvShape& s = p.shape;
  return {p.groups, s.channels, p.out_channels / p.groups, s.channels * s.kernel_h * s.kernel_w, s.height * s.width,
          s.out_h * s.out_w};
}

// Output rows per block of the column matrix: a block [ckk, rows * Wo] of at most
// kColumnBlockBytes is written by im2col and read by the GEMM while it is still in L2. At least
// 64 columns (narrower blocks make slow GEMMs); blocks of equal height.
int64_t block_rows(int64_t ckk, const ConvShape& s, size_t elem) {
  const int64_t row_bytes = ckk * s.out_w * int64_t(elem);
  int64_t rows = std::max<int64_t>(kColumnBlockBytes / std::max<int64_t>(row_bytes, 1), 1);
  rows = std::max<int64_t>(rows, (64 + s.out_w - 1) / std::max<int64_t>(s.out_w, 1));
  rows = std::min<int64_t>(rows, std::max<int64_t>(s.out_h, 1));
  const int64_t blocks = (s.out_h + rows - 1) / rows;
  return (s.out_h + blocks - 1) / std::max<int64_t>(blocks, 1);
}

}  // namespace

template <typename T>
void im2col(const T* x, const ConvShape& s, T* col, int64_t ld, bool parallel) {
  im2col_rows(x, s, 0, s.out_h, col, ld, parallel);
}
template <typename T>
void im2col_rows(const T* x, const ConvShape& s, int64_t oh_a, int64_t oh_b, T* col, int64_t ld, bool parallel) {
  const int64_t rows = s.channels * s.kernel_h * s.kernel_w, len = (oh_b - oh_a) * s.out_w;
#pragma omp parallel for schedule(static) if (parallel && rows * len >= kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) im2col_row(x, s, r, oh_a, oh_b, col + r * ld);
}

template <typename T>
void col2im(const T* col, int64_t ld, const ConvShape& s, T* x, bool parallel) {
  const int64_t hw = s.height * s.width;
#pragma omp parallel for schedule(static) if (parallel && s.channels * hw >= kParallelGrain)
  for (int64_t c = 0; c < s.channels; ++c) {
    std::fill(x + c * hw, x + (c + 1) * hw, T(0));
    col2im_channel(col, ld, s, c, 0, s.out_h, x + c * hw);
  }
}

template <typename T>
void conv2d_forward(const ConvProblem& p, const T* x, const T* w, const T* bias, T* y) {
  const ConvShape& s = p.shape;
  const auto [groups, cg, og, ckk, hw, ohw] = sizes_of(p);
  const int64_t items = p.batch * groups;
  auto x_of = [&](int64_t it) { return x + ((it / groups) * p.in_channels + (it % groups) * cg) * hw; };
  auto y_of = [&](int64_t it) { return y + ((it / groups) * p.out_channels + (it % groups) * og) * ohw; };
  auto fill_bias = [&](int64_t it) {
    if (bias) fill_rows(y_of(it), bias + (it % groups) * og, og, ohw);
  };
  const T beta = T(bias ? 1 : 0);
  // y[n, g] = W_g col(x[n, g]), accumulated onto the bias.
  auto call = [&](int64_t it, const T* col) {
    GemmCall<T> c;
    c.m = og, c.n = ohw, c.k = ckk;
    c.a = w + (it % groups) * og * ckk, c.lda = ckk;
    c.b = col, c.ldb = ohw;
    c.beta = beta, c.c = y_of(it), c.ldc = ohw;
    return c;
  };
  if (is_pointwise(s)) {  // 1x1, stride 1, no padding: the image is its own column matrix
    if (bias) {
#pragma omp parallel for schedule(static) if (items * og * ohw >= kParallelGrain)
      for (int64_t it = 0; it < items; ++it) fill_bias(it);
    }
    gemm_batch<T>(items, og, ohw, ckk, [&](int64_t it) { return call(it, x_of(it)); });
    return;
  }
  blas_single_thread();
  // Tasks: (item, block of output rows). Each writes its own columns of y: im2col of the block
  // into a per-thread buffer (it stays in cache), bias, then GEMM over the full K.
  const int64_t rb = block_rows(ckk, s, sizeof(T)), blocks = (s.out_h + rb - 1) / std::max<int64_t>(rb, 1);
  const int64_t tasks = items * blocks, block_cols = rb * s.out_w;
  if (run_as_tasks(tasks, og, block_cols, ckk)) {
    const bool parallel = items_parallel(tasks, og, block_cols, ckk);
    Tensor buf = workspace((parallel ? max_slots() : 1) * ckk * block_cols, p.dtype);
    for_each_item(tasks, parallel, [&](int64_t task, int slot) {
      const int64_t it = task / blocks, oh_a = (task % blocks) * rb, oh_b = std::min(s.out_h, oh_a + rb);
      const int64_t cols = (oh_b - oh_a) * s.out_w, q0 = oh_a * s.out_w;
      T* col = buf.data<T>() + int64_t(slot) * ckk * block_cols;
      im2col_rows(x_of(it), s, oh_a, oh_b, col, cols, false);
      GemmCall<T> c = call(it, col);
      c.n = cols, c.ldb = cols, c.c += q0;  // columns [q0, q0 + cols) of y[n, g]
      if (bias)
        for (int64_t o = 0; o < og; ++o) std::fill(c.c + o * ohw, c.c + o * ohw + cols, bias[(it % groups) * og + o]);
      gemm_tile(c, 0, og, 0, cols);
    });
  } else {
    // Few large items: one after another, each im2col and GEMM spread over the threads.
    Tensor buf = workspace(ckk * ohw, p.dtype);
    for (int64_t it = 0; it < items; ++it) {
      im2col(x_of(it), s, buf.data<T>(), ohw, true);
      fill_bias(it);
      gemm_parallel(call(it, buf.data<T>()));
    }
  }
}

template <typename T>
void conv2d_input(const ConvProblem& p, const T* y, const T* w, const T* bias, T* x) {
  const ConvShape& s = p.shape;
  const auto [groups, cg, og, ckk, hw, ohw] = sizes_of(p);
  const int64_t items = p.batch * groups;
  auto x_of = [&](int64_t it) { return x + ((it / groups) * p.in_channels + (it % groups) * cg) * hw; };
  auto y_of = [&](int64_t it) { return y + ((it / groups) * p.out_channels + (it % groups) * og) * ohw; };
  // col = W_g^T y[n, g]  (W_g stored [og, ckk]: the transpose flag)
  auto call = [&](int64_t it, T* col, T beta) {
    GemmCall<T> c;
    c.trans_a = true;
    c.m = ckk, c.n = ohw, c.k = og;
    c.a = w + (it % groups) * og * ckk, c.lda = ckk;
    c.b = y_of(it), c.ldb = ohw;
    c.beta = beta, c.c = col, c.ldc = ohw;
    return c;
  };
  if (is_pointwise(s)) {  // x[n, g] = W_g^T y[n, g] directly (ckk = cg, ohw = hw)
    if (bias) {
#pragma omp parallel for schedule(static) if (items * cg * hw >= kParallelGrain)
      for (int64_t it = 0; it < items; ++it) fill_rows(x_of(it), bias + (it % groups) * cg, cg, hw);
    }
    gemm_batch<T>(items, ckk, ohw, og, [&](int64_t it) { return call(it, x_of(it), T(bias ? 1 : 0)); });
    return;
  }
  blas_single_thread();
  if (run_as_tasks(items, ckk, ohw, og)) {
    // One task per item: for each block of output rows, the block's columns of W_g^T y[n, g]
    // into a per-thread buffer (still in cache for col2im), added into x[n, g]. Blocks in
    // order: an input pixel near a block edge sums its taps block by block.
    const int64_t rb = block_rows(ckk, s, sizeof(T)), block_cols = rb * s.out_w;
    const bool parallel = items_parallel(items, ckk, ohw, og);
    Tensor buf = workspace((parallel ? max_slots() : 1) * ckk * block_cols, p.dtype);
    for_each_item(items, parallel, [&](int64_t it, int slot) {
      T* col = buf.data<T>() + int64_t(slot) * ckk * block_cols;
      T* xs = x_of(it);
      std::fill(xs, xs + cg * hw, T(0));
      for (int64_t oh_a = 0; oh_a < s.out_h; oh_a += rb) {
        const int64_t oh_b = std::min(s.out_h, oh_a + rb), cols = (oh_b - oh_a) * s.out_w;
        GemmCall<T> c = call(it, col, T(0));
        c.n = cols, c.b += oh_a * s.out_w, c.ldc = cols;
        gemm_tile(c, 0, ckk, 0, cols);
        for (int64_t ch = 0; ch < cg; ++ch) col2im_channel(col, cols, s, ch, oh_a, oh_b, xs + ch * hw);
      }
      if (bias) add_rows(xs, bias + (it % groups) * cg, cg, hw);
    });
  } else {
    Tensor buf = workspace(ckk * ohw, p.dtype);
    for (int64_t it = 0; it < items; ++it) {
      gemm_parallel(call(it, buf.data<T>(), T(0)));
      col2im(buf.data<T>(), ohw, s, x_of(it), true);
      if (bias) add_rows(x_of(it), bias + (it % groups) * cg, cg, hw);
    }
  }
}

template <typename T>
void conv2d_weight(const ConvProblem& p, const T* x, const T* gy, T* gw) {
  const ConvShape& s = p.shape;
  const auto [groups, cg, og, ckk, hw, ohw] = sizes_of(p);
  const int64_t batch = p.batch;
  const bool pointwise = is_pointwise(s);
  if (batch == 0 || ohw == 0) {
    std::fill(gw, gw + p.out_channels * ckk, T(0));
    return;
  }
  blas_single_thread();
  auto x_of = [&](int64_t n, int64_t g) { return x + (n * p.in_channels + g * cg) * hw; };
  auto gy_of = [&](int64_t n, int64_t g) { return gy + (n * p.out_channels + g * og) * ohw; };
  // dW_g (+)= gy[n, g] col(x[n, g])^T   (col stored [ckk, ohw]: the transpose flag)
  auto call = [&](int64_t n, int64_t g, const T* col) {
    GemmCall<T> c;
    c.trans_b = true;
    c.m = og, c.n = ckk, c.k = ohw;
    c.a = gy_of(n, g), c.lda = ohw;
    c.b = col, c.ldb = ohw;
    c.beta = T(n == 0 ? 0 : 1), c.c = gw + g * og * ckk, c.ldc = ckk;
    return c;
  };

  // The samples are cut into S chunks (S depends only on the batch size). A task (chunk, group)
  // sums its samples' GEMMs in order into its own partial gradient (beta = 1 after its first
  // sample), with one image's column matrix at a time in a per-thread buffer (it stays in cache);
  // the partials are then added in chunk order. Batch-grouped weights (one sample, many groups)
  // make the groups the tasks.
  const int64_t chunks = std::min<int64_t>(batch, kWeightChunks);
  const int64_t tasks = chunks * groups;
  if (run_as_tasks(tasks, og, ckk, ohw)) {
    // Each sample's columns go block by block of output rows (a block stays in cache between
    // im2col and the GEMM, whose K is the block's columns); 1x1 convs read x directly.
    const bool parallel = items_parallel(tasks, og, ckk, ohw * batch / chunks);
    const int64_t weight_elems = p.out_channels * ckk;
    const int64_t rb = pointwise ? s.out_h : block_rows(ckk, s, sizeof(T)), block_cols = rb * s.out_w;
    Tensor partial_buf, col_buf;
    if (chunks > 1) partial_buf = workspace(chunks * weight_elems, p.dtype);
    if (!pointwise) col_buf = workspace((parallel ? max_slots() : 1) * ckk * block_cols, p.dtype);
    T* partials = chunks > 1 ? partial_buf.data<T>() : gw;
    for_each_item(tasks, parallel, [&](int64_t task, int slot) {
      const int64_t chunk = task / groups, g = task % groups;
      const int64_t n0 = chunk * batch / chunks, n1 = (chunk + 1) * batch / chunks;
      T* col = pointwise ? nullptr : col_buf.data<T>() + int64_t(slot) * ckk * block_cols;
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t oh_a = 0; oh_a < s.out_h; oh_a += rb) {
          const int64_t oh_b = std::min(s.out_h, oh_a + rb), cols = (oh_b - oh_a) * s.out_w;
          GemmCall<T> c = call(n, g, pointwise ? x_of(n, g) : col);
          if (!pointwise) {
            im2col_rows(x_of(n, g), s, oh_a, oh_b, col, cols, false);
            c.ldb = cols;
          }
          c.k = cols, c.a += oh_a * s.out_w;
          c.beta = T(n == n0 && oh_a == 0 ? 0 : 1);
          c.c = partials + chunk * weight_elems + g * og * ckk;
          gemm_tile(c, 0, og, 0, ckk);
        }
    });
    if (chunks > 1) {
#pragma omp parallel for schedule(static) if (weight_elems * chunks >= kParallelGrain)
      for (int64_t e = 0; e < weight_elems; ++e) {
        T acc = partials[e];
        for (int64_t c = 1; c < chunks; ++c) acc += partials[c * weight_elems + e];
        gw[e] = acc;
      }
    }
    return;
  }
  // Few large GEMMs: samples in order, each im2col and GEMM spread over the threads.
  Tensor buf;
  if (!pointwise) buf = workspace(ckk * ohw, p.dtype);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t n = 0; n < batch; ++n) {
      if (!pointwise) im2col(x_of(n, g), s, buf.data<T>(), ohw, true);
      gemm_parallel(call(n, g, pointwise ? x_of(n, g) : buf.data<T>()));
    }
}

#define ENGINE_CONV_INSTANTIATE(T)                                                                 \
  template void im2col<T>(const T*, const ConvShape&, T*, int64_t, bool);                          \
  template void im2col_rows<T>(const T*, const ConvShape&, int64_t, int64_t, T*, int64_t, bool);   \
  template void col2im<T>(const T*, int64_t, const ConvShape&, T*, bool);                          \
  template void conv2d_forward<T>(const ConvProblem&, const T*, const T*, const T*, T*);           \
  template void conv2d_input<T>(const ConvProblem&, const T*, const T*, const T*, T*);             \
  template void conv2d_weight<T>(const ConvProblem&, const T*, const T*, T*);
ENGINE_CONV_INSTANTIATE(float)
ENGINE_CONV_INSTANTIATE(double)
#undef ENGINE_CONV_INSTANTIATE

}  // namespace engine::cpu
