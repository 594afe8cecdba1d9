// upfirdn.cpp (cuda): host side of upfirdn2d's CUDA passes (upfirdn.h): checks and launches.
#include "tensor/cuda/upfirdn.h"

#include "tensor/cuda/device.h"
#include "tensor/cuda/upfirdn_launch.h"
#include "tensor/dispatch.h"

namespace engine::cuda {

namespace {

void check_operands(const Tensor& x, const Tensor& out, const Tensor& w) {
  const char* op = "cuda::upfirdn2d";
  check_device(out.device(), op);
  for (const Tensor* t : {&x, &w})
    ENGINE_CHECK(t->device() == out.device() && t->dtype() == out.dtype() && t->is_contiguous(),
                 "{}: operands must be contiguous {} on {}, got {} on {}", op, dtype_name(out.dtype()),
                 out.device().str(), dtype_name(t->dtype()), t->device().str());
  ENGINE_CHECK(out.is_contiguous(), "{}: the output must be contiguous", op);
}

}  // namespace

void upfirdn2d_2d(const Tensor& x, const Tensor& out, int64_t planes, const kernels::UpFirDnGeometry& g,
                  const Tensor& w) {
  check_operands(x, out, w);
  ENGINE_CHECK(w.numel() == g.kh * g.kw, "cuda::upfirdn2d: {} weights for a {}x{} filter", w.numel(), g.kh, g.kw);
  DeviceGuard guard(out.device());
  dispatch_floating(out.dtype(), "cuda::upfirdn2d", [&](auto zero) {
    using T = decltype(zero);
    launch_upfirdn2d_2d<T>(x.data<T>(), out.data<T>(), planes, g, w.data<T>(), compute_stream(out.device()));
  });
}

void upfirdn2d_pass_x(const Tensor& x, const Tensor& out, int64_t rows, int64_t W, int64_t Wo, const Tensor& w,
                      int64_t up, int64_t down, int64_t pad0) {
  check_operands(x, out, w);
  DeviceGuard guard(out.device());
  dispatch_floating(out.dtype(), "cuda::upfirdn2d", [&](auto zero) {
    using T = decltype(zero);
    launch_upfirdn2d_pass_x<T>(x.data<T>(), out.data<T>(), rows, W, Wo, w.data<T>(), w.numel(), up, down, pad0,
                               compute_stream(out.device()));
  });
}

void upfirdn2d_pass_y(const Tensor& x, const Tensor& out, int64_t planes, int64_t H, int64_t Ho, int64_t W,
                      const Tensor& w, int64_t up, int64_t down, int64_t pad0) {
  check_operands(x, out, w);
  DeviceGuard guard(out.device());
  dispatch_floating(out.dtype(), "cuda::upfirdn2d", [&](auto zero) {
    using T = decltype(zero);
    launch_upfirdn2d_pass_y<T>(x.data<T>(), out.data<T>(), planes, H, Ho, W, w.data<T>(), w.numel(), up, down, pad0,
                               compute_stream(out.device()));
  });
}

}  // namespace engine::cuda
