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
// The per-pixel math is tensor/kernels/pool.h: the CPU loop runs one (n, c) plane per OpenMP
// iteration, the CUDA kernel (tensor/cuda/pool.cu) one thread per output pixel.
#include <algorithm>
#include <cmath>
#include <limits>

#include "autograd/grad_mode.h"
#include "tensor/dispatch.h"
#include "tensor/op_helpers.h"
#include "tensor/kernels/pool.h"
#include "tensor/ops.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/pool.h"
#endif

namespace engine {

namespace {

struct PoolShape {
  int64_t planes, h, w, ho, wo;
};

PoolShape check_pool(const char* op, const Tensor& x, const Pool2dParams& p) {
  ENGINE_CHECK(x.defined(), "{}: input is undefined", op);
  check_floating(op, x);
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

kernels::PoolGeometry pool_geometry(const PoolShape& s, const Pool2dParams& p) {
  kernels::PoolGeometry g;
  g.h = s.h, g.w = s.w, g.ho = s.ho, g.wo = s.wo;
  g.kh = p.kernel_h, g.kw = p.kernel_w, g.sh = p.stride_h, g.sw = p.stride_w, g.ph = p.pad_h, g.pw = p.pad_w;
  return g;
}

// CPU: calls f(in_plane, out_plane, i, j) for every output pixel, one (n, c) plane per iteration.
template <typename T, typename F>
void for_each_pixel(const PoolShape& s, const T* in, T* out, int64_t window, F&& f) {
  const int64_t work = s.planes * s.ho * s.wo * window;
#pragma omp parallel for schedule(static) if (work >= (1 << 16) && s.planes > 1)
  for (int64_t pl = 0; pl < s.planes; ++pl) {
    const T* ip = in + pl * s.h * s.w;
    T* op = out + pl * s.ho * s.wo;
    for (int64_t i = 0; i < s.ho; ++i)
      for (int64_t j = 0; j < s.wo; ++j) op[i * s.wo + j] = f(ip, i, j);
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
  const kernels::PoolGeometry g = pool_geometry(s, p);
  if (use_cuda("max_pool2d", x)) {
#if ENGINE_WITH_CUDA
    cuda::max_pool2d(xc, out, s.planes, g);
#endif
    return out;
  }
  dispatch_floating(x.dtype(), "max_pool2d", [&](auto zero) {
    using T = decltype(zero);
    for_each_pixel(s, xc.data<T>(), out.data<T>(), p.kernel_h * p.kernel_w,
                   [&](const T* in, int64_t i, int64_t j) { return kernels::max_pool_at(in, g, i, j); });
  });
  return out;
}

Tensor avg_pool2d(const Tensor& x, const Pool2dParams& p, bool count_include_pad) {
  ENGINE_OP("avg_pool2d", x);
  const PoolShape s = check_pool("avg_pool2d", x, p);
  Tensor out = empty({x.size(0), x.size(1), s.ho, s.wo}, opts(x.dtype(), x.device()));
  const Tensor xc = dense(x);
  const kernels::PoolGeometry g = pool_geometry(s, p);
  if (use_cuda("avg_pool2d", x)) {
#if ENGINE_WITH_CUDA
    cuda::avg_pool2d(xc, out, s.planes, g, count_include_pad);
#endif
    return out;
  }
  dispatch_floating(x.dtype(), "avg_pool2d", [&](auto zero) {
    using T = decltype(zero);
    for_each_pixel(s, xc.data<T>(), out.data<T>(), p.kernel_h * p.kernel_w, [&](const T* in, int64_t i, int64_t j) {
      return kernels::avg_pool_at(in, g, count_include_pad, i, j);
    });
  });
  return out;
}

}  // namespace engine
