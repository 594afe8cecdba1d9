// ops_pool.cpp: max_pool2d and avg_pool2d, forward only (declared in tensor/ops.h).
//
// They exist for the FID Inception-v3 (aurora/inception.h): the stem's 3x3 stride-2 max pools,
// Mixed_6a/7a's max-pool branches, Mixed_7c's 3x3 stride-1 max-pool branch, and the avg-pool
// branches of Mixed_5b..7b with count_include_pad = false (pytorch-fid's FIDInceptionA/C/E_1; the
// TF graph averages only the pixels inside the image). Evaluation needs no gradient, so neither
// op records a Node: asking for one (grad mode on and an input that requires grad) is an error
// rather than a silently missing gradient.
//
//   max_pool2d:  y[n,c,i,j] = max_{a<kh, b<kw, inside} x[n,c, i*sh - ph + a, j*sw - pw + b]
//   avg_pool2d:  y[n,c,i,j] = sum_{inside} x[...] / (count_include_pad ? kh*kw : #inside)
//
// The loop is one (n, c) plane per OpenMP iteration; the window bounds are clipped to the image
// once per output pixel, so the inner loops have no branches.
#include <algorithm>
#include <cmath>
#include <limits>

#include "autograd/grad_mode.h"
#include "tensor/dispatch.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"

namespace engine {

namespace {

struct PoolShape {
  int64_t planes, h, w, ho, wo;
};

PoolShape check_pool(const char* op, const Tensor& x, const Pool2dParams& p) {
  ENGINE_CHECK(x.defined(), "{}: input is undefined", op);
  check_floating(op, x);
  check_cpu(op, x);
  ENGINE_CHECK(!(autograd::grad_enabled() && x.requires_grad()),
               "{}: not differentiable (a forward-only op for evaluation) but the input {} requires grad; "
               "run it under autograd::NoGradGuard or on a detached tensor",
               op, x.sizes().str());
  ENGINE_CHECK(x.dim() == 4, "{}: expected a 4-D input [N, C, H, W], got shape {}", op, x.sizes().str());
  ENGINE_CHECK(p.kernel_h >= 1 && p.kernel_w >= 1, "{}: kernel must be >= 1, got ({}, {})", op, p.kernel_h,
               p.kernel_w);
  ENGINE_CHECK(p.stride_h >= 1 && p.stride_w >= 1, "{}: stride must be >= 1, got ({}, {})", op, p.stride_h,
               p.stride_w);
  ENGINE_CHECK(p.pad_h >= 0 && p.pad_w >= 0 && 2 * p.pad_h <= p.kernel_h && 2 * p.pad_w <= p.kernel_w,
               "{}: padding ({}, {}) must be >= 0 and at most half the kernel ({}, {})", op, p.pad_h, p.pad_w,
               p.kernel_h, p.kernel_w);
  const int64_t h = x.size(2), w = x.size(3);
  ENGINE_CHECK(h + 2 * p.pad_h >= p.kernel_h && w + 2 * p.pad_w >= p.kernel_w,
               "{}: kernel ({}, {}) is larger than the padded input {} (padding ({}, {}))", op, p.kernel_h,
               p.kernel_w, x.sizes().str(), p.pad_h, p.pad_w);
  PoolShape s;
  s.planes = x.size(0) * x.size(1);
  s.h = h;
  s.w = w;
  s.ho = (h + 2 * p.pad_h - p.kernel_h) / p.stride_h + 1;
  s.wo = (w + 2 * p.pad_w - p.kernel_w) / p.stride_w + 1;
  return s;
}

// Calls f(in_plane, out_plane) for every (n, c) plane, in parallel when there is enough work.
template <typename T, typename F>
void for_each_plane(const PoolShape& s, const T* in, T* out, int64_t window, F&& f) {
  const int64_t work = s.planes * s.ho * s.wo * window;
#pragma omp parallel for schedule(static) if (work >= (1 << 16) && s.planes > 1)
  for (int64_t pl = 0; pl < s.planes; ++pl) f(in + pl * s.h * s.w, out + pl * s.ho * s.wo);
}

template <typename T>
void max_pool_plane(const PoolShape& s, const Pool2dParams& p, const T* in, T* out) {
  for (int64_t i = 0; i < s.ho; ++i) {
    const int64_t y0 = std::max<int64_t>(i * p.stride_h - p.pad_h, 0);
    const int64_t y1 = std::min<int64_t>(i * p.stride_h - p.pad_h + p.kernel_h, s.h);
    for (int64_t j = 0; j < s.wo; ++j) {
      const int64_t x0 = std::max<int64_t>(j * p.stride_w - p.pad_w, 0);
      const int64_t x1 = std::min<int64_t>(j * p.stride_w - p.pad_w + p.kernel_w, s.w);
      T m = -std::numeric_limits<T>::infinity();
      bool nan = false;
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = x0; x < x1; ++x) {
          const T v = in[y * s.w + x];
          nan |= std::isnan(v);
          m = v > m ? v : m;
        }
      out[i * s.wo + j] = nan ? std::numeric_limits<T>::quiet_NaN() : m;
    }
  }
}

template <typename T>
void avg_pool_plane(const PoolShape& s, const Pool2dParams& p, bool count_include_pad, const T* in, T* out) {
  for (int64_t i = 0; i < s.ho; ++i) {
    const int64_t y0 = std::max<int64_t>(i * p.stride_h - p.pad_h, 0);
    const int64_t y1 = std::min<int64_t>(i * p.stride_h - p.pad_h + p.kernel_h, s.h);
    for (int64_t j = 0; j < s.wo; ++j) {
      const int64_t x0 = std::max<int64_t>(j * p.stride_w - p.pad_w, 0);
      const int64_t x1 = std::min<int64_t>(j * p.stride_w - p.pad_w + p.kernel_w, s.w);
      T acc = 0;
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = x0; x < x1; ++x) acc += in[y * s.w + x];
      // With padding <= kernel/2 every window holds at least one in-image pixel.
      const int64_t count = count_include_pad ? p.kernel_h * p.kernel_w : (y1 - y0) * (x1 - x0);
      out[i * s.wo + j] = acc / T(count);
    }
  }
}

Tensor dense(const Tensor& t) {
  if (t.is_contiguous()) return t;
  autograd::NoGradGuard no_grad;
  return contiguous(t);
}

}  // namespace

Tensor max_pool2d(const Tensor& x, const Pool2dParams& p) {
  ENGINE_OP("max_pool2d", x);
  const PoolShape s = check_pool("max_pool2d", x, p);
  Tensor out = empty({x.size(0), x.size(1), s.ho, s.wo}, opts(x.dtype(), x.device()));
  const Tensor xc = dense(x);
  dispatch_floating(x.dtype(), "max_pool2d", [&](auto zero) {
    using T = decltype(zero);
    for_each_plane(s, xc.data<T>(), out.data<T>(), p.kernel_h * p.kernel_w,
                   [&](const T* in, T* o) { max_pool_plane<T>(s, p, in, o); });
  });
  return out;
}

Tensor avg_pool2d(const Tensor& x, const Pool2dParams& p, bool count_include_pad) {
  ENGINE_OP("avg_pool2d", x);
  const PoolShape s = check_pool("avg_pool2d", x, p);
  Tensor out = empty({x.size(0), x.size(1), s.ho, s.wo}, opts(x.dtype(), x.device()));
  const Tensor xc = dense(x);
  dispatch_floating(x.dtype(), "avg_pool2d", [&](auto zero) {
    using T = decltype(zero);
    for_each_plane(s, xc.data<T>(), out.data<T>(), p.kernel_h * p.kernel_w,
                   [&](const T* in, T* o) { avg_pool_plane<T>(s, p, count_include_pad, in, o); });
  });
  return out;
}

}  // namespace engine
