// ops_upfirdn.cpp: upfirdn2d, StyleGAN2's fused FIR resampling (upsample, pad, filter, downsample).
//
// Semantics are those of StyleGAN2-ADA's reference (torch_utils/ops/upfirdn2d.py,
// _upfirdn2d_ref) with flip_filter=False:
//   1. upsample: each pixel is followed by up-1 inserted zeros along each axis (size H*up_y, W*up_x);
//   2. pad with pad_x0/pad_x1/pad_y0/pad_y1 zeros (negative values crop);
//   3. convolve with f (correlate with the flipped filter), times the gain;
//   4. keep every down-th pixel, starting with the first.
//   Ho = floor((H*up_y + pad_y0 + pad_y1 - kh) / down_y) + 1, and likewise Wo.
// Gain: the reference scales f by gain^(f.ndim/2). A 2-D filter is applied once, times gain. A 1-D
// filter [k] is separable: it is applied along x and then along y (the reference's two grouped
// convolutions, and its CUDA path's two passes), each pass scaled by sqrt(gain), so the total
// scale is gain and the result equals the 2-D filter outer(f, f) with that gain. (A negative gain,
// which the reference cannot take for a 1-D filter, puts the sign on the y pass.) A 2-D filter
// that is an outer product (as StyleGAN2's always are) also runs as two 1-D passes: see
// split_outer_product.
// The filter is a constant: it may be f32 or f64 whatever x's dtype is (its values are converted
// to x's dtype after flipping and scaling), and it must not require grad (the reference asserts
// the same; no gradient is defined for it). Its backward w.r.t. x is upfirdn2d again
// (autograd/formulas/upfirdn.cpp), so the op is differentiable to any order.
// On CUDA (tensor/cuda/upfirdn.cu) each pass is one thread per output pixel over the per-pixel
// forms of tensor/kernels/upfirdn.h; the weights are prepared on the host and copied over.
#include <cmath>
#include <vector>

#include "autograd/formulas/upfirdn.h"
#include "autograd/grad_mode.h"
#include "tensor/cpu/upfirdn.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/upfirdn.h"
#endif
#include "tensor/dispatch.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"

namespace engine {

namespace {

// floor(a / b) for b > 0 (C++ division truncates toward zero; the reference uses Python's //).
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// The filter's values flipped (both axes: a reversed row-major array) and scaled, as T.
template <typename T>
std::vector<T> correlation_weights(const std::vector<double>& f, double scale) {
  std::vector<T> w(f.size());
  for (size_t i = 0; i < f.size(); ++i) w[i] = T(f[f.size() - 1 - i] * scale);
  return w;
}

// A 2-D filter that is an outer product, f[i][j] = r[i] c[j] (StyleGAN2's filters always are),
// runs as two 1-D passes like a separable one: kh + kw multiply-adds per output instead of kh kw.
// Accepted when every f[i][j] is within 1e-12 (relative to max |f|) of r[i] c[j], so the result
// is the 2-D convolution's up to rounding.
bool split_outer_product(const std::vector<double>& f, int64_t kh, int64_t kw, std::vector<double>& r,
                         std::vector<double>& c) {
  size_t pivot = 0;
  for (size_t i = 0; i < f.size(); ++i)
    if (std::abs(f[i]) > std::abs(f[pivot])) pivot = i;
  const double fmax = std::abs(f[pivot]);
  if (!(fmax > 0) || !std::isfinite(fmax)) return false;
  const int64_t i0 = int64_t(pivot) / kw, j0 = int64_t(pivot) % kw;
  r.assign(size_t(kh), 0.0);
  c.assign(size_t(kw), 0.0);
  for (int64_t i = 0; i < kh; ++i) r[size_t(i)] = f[size_t(i * kw + j0)];
  for (int64_t j = 0; j < kw; ++j) c[size_t(j)] = f[size_t(i0 * kw + j)] / f[pivot];
  for (int64_t i = 0; i < kh; ++i)
    for (int64_t j = 0; j < kw; ++j)
      if (std::abs(f[size_t(i * kw + j)] - r[size_t(i)] * c[size_t(j)]) > 1e-12 * fmax) return false;
  return true;
}

}  // namespace

Tensor upfirdn2d(const Tensor& x, const Tensor& f, const UpFirDnParams& p) {
  ENGINE_OP("upfirdn2d", x, f);
  ENGINE_CHECK(x.defined(), "upfirdn2d: x is undefined");
  ENGINE_CHECK(f.defined(), "upfirdn2d: the filter f is undefined");
  check_floating("upfirdn2d", x);
  ENGINE_CHECK(x.dim() == 4, "upfirdn2d: expected x of shape [N, C, H, W], got {}", x.sizes().str());
  ENGINE_CHECK(f.dim() == 1 || f.dim() == 2,
               "upfirdn2d: the filter must be 1-D [k] (separable) or 2-D [kh, kw], got a {}-D filter of shape {}",
               f.dim(), f.sizes().str());
  ENGINE_CHECK(f.numel() > 0, "upfirdn2d: the filter is empty (shape {})", f.sizes().str());
  ENGINE_CHECK(is_floating(f.dtype()), "upfirdn2d: the filter must be floating point, got {}", dtype_name(f.dtype()));
  ENGINE_CHECK(!f.requires_grad(),
               "upfirdn2d: the filter is a constant and has no gradient, but it requires grad (pass f.detach())");
  ENGINE_CHECK(p.up_x >= 1 && p.up_y >= 1, "upfirdn2d: up factors must be >= 1, got up_x={} up_y={}", p.up_x, p.up_y);
  ENGINE_CHECK(p.down_x >= 1 && p.down_y >= 1, "upfirdn2d: down factors must be >= 1, got down_x={} down_y={}",
               p.down_x, p.down_y);
  ENGINE_CHECK(std::isfinite(p.gain), "upfirdn2d: gain must be finite, got {}", p.gain);

  const bool separable = f.dim() == 1;
  const int64_t kh = f.size(0), kw = f.size(f.dim() - 1);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = floor_div(H * p.up_y + p.pad_y0 + p.pad_y1 - kh, p.down_y) + 1;
  const int64_t Wo = floor_div(W * p.up_x + p.pad_x0 + p.pad_x1 - kw, p.down_x) + 1;
  ENGINE_CHECK(Ho > 0 && Wo > 0,
               "upfirdn2d: output size {}x{} <= 0 (input {}x{}, up {}x{}, pad x {},{} y {},{}, filter {}x{}, down {}x{})",
               Ho, Wo, H, W, p.up_y, p.up_x, p.pad_x0, p.pad_x1, p.pad_y0, p.pad_y1, kh, kw, p.down_y, p.down_x);

  Tensor xc;
  {
    autograd::NoGradGuard no_grad;  // the Node below is recorded on x itself
    xc = contiguous(x);
  }
  // The filter's values shape the passes (separable or not) and are scaled on the host: a CUDA
  // filter (a module buffer moved with the model) is copied to the host for that; it is tiny.
  const std::vector<double> fv = (f.device().is_cpu() ? f : f.to(Device::cpu())).to_vector();
  // Separable passes: the 1-D filter along x then y, each times sqrt(gain) as the reference; or
  // the factors of an outer-product 2-D filter, the gain on the y pass.
  std::vector<double> fx = fv, fy = fv;
  double gain_x = 1.0, gain_y = p.gain;
  const bool two_pass = separable || split_outer_product(fv, kh, kw, fy, fx);
  if (separable) {
    gain_x = std::sqrt(std::abs(p.gain));
    gain_y = p.gain < 0 ? -gain_x : gain_x;
  }
  Tensor out = empty({N, C, Ho, Wo}, opts(x.dtype(), x.device()));
  const int64_t planes = N * C;
  const bool on_cuda = use_cuda("upfirdn2d", x);
  // The correlation weights on x's device (CUDA kernels read them from device memory).
  [[maybe_unused]] auto device_weights = [&](const auto& w) {
    return from_vector(std::vector<double>(w.begin(), w.end()), {int64_t(w.size())}, opts(x.dtype(), x.device()));
  };
  dispatch_floating(x.dtype(), "upfirdn2d", [&](auto zero) {
    using T = decltype(zero);
    if (!two_pass) {
      const std::vector<T> w = correlation_weights<T>(fv, p.gain);
      kernels::UpFirDnGeometry g;
      g.H = H, g.W = W, g.Ho = Ho, g.Wo = Wo, g.kh = kh, g.kw = kw;
      g.up_x = p.up_x, g.up_y = p.up_y, g.down_x = p.down_x, g.down_y = p.down_y;
      g.pad_x0 = p.pad_x0, g.pad_y0 = p.pad_y0;
      if (on_cuda) {
#if ENGINE_WITH_CUDA
        cuda::upfirdn2d_2d(xc, out, planes, g, device_weights(w));
#endif
      } else {
        cpu::upfirdn2d_2d<T>(xc.data<T>(), out.data<T>(), planes, g, w.data());
      }
    } else {
      const std::vector<T> wx = correlation_weights<T>(fx, gain_x);
      const std::vector<T> wy = correlation_weights<T>(fy, gain_y);
      // Pass 1 along x: [N*C*H, W] -> [N*C*H, Wo]; pass 2 along y: [N*C, H, Wo] -> [N*C, Ho, Wo].
      Tensor tmp = empty({N, C, H, Wo}, opts(x.dtype(), x.device()));
      if (on_cuda) {
#if ENGINE_WITH_CUDA
        cuda::upfirdn2d_pass_x(xc, tmp, planes * H, W, Wo, device_weights(wx), p.up_x, p.down_x, p.pad_x0);
        cuda::upfirdn2d_pass_y(tmp, out, planes, H, Ho, Wo, device_weights(wy), p.up_y, p.down_y, p.pad_y0);
#endif
      } else {
        cpu::upfirdn2d_pass_x<T>(xc.data<T>(), tmp.data<T>(), planes * H, W, Wo, wx.data(), kw, p.up_x, p.down_x,
                                 p.pad_x0);
        cpu::upfirdn2d_pass_y<T>(tmp.data<T>(), out.data<T>(), planes, H, Ho, Wo, wy.data(), kh, p.up_y, p.down_y,
                                 p.pad_y0);
      }
    }
  });
  autograd::formulas::upfirdn2d(x, f, p, out);
  return out;
}

}  // namespace engine
