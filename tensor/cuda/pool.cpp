// pool.cpp (cuda): host side of the pooling kernels (pool.h): checks and launches.
#include "tensor/cuda/pool.h"

#include "tensor/cuda/device.h"
#include "tensor/cuda/pool_launch.h"
#include "tensor/dispatch.h"

namespace engine::cuda {

namespace {
void check_pool_operands(const char* op, const Tensor& x, const Tensor& out) {
  check_device(out.device(), op);
  ENGINE_CHECK(x.device() == out.device() && x.dtype() == out.dtype() && x.is_contiguous() && out.is_contiguous(),
               "{}: x ({} on {}) and out ({} on {}) must be contiguous, of one dtype, on one device", op,
               dtype_name(x.dtype()), x.device().str(), dtype_name(out.dtype()), out.device().str());
}
}  // namespace

void max_pool2d(const Tensor& x, const Tensor& out, int64_t planes, const kernels::PoolGeometry& g) {
  check_pool_operands("cuda::max_pool2d", x, out);
  DeviceGuard guard(out.device());
  dispatch_floating(out.dtype(), "cuda::max_pool2d", [&](auto zero) {
    using T = decltype(zero);
    launch_max_pool2d<T>(x.data<T>(), out.data<T>(), planes, g, compute_stream(out.device()));
  });
}

void avg_pool2d(const Tensor& x, const Tensor& out, int64_t planes, const kernels::PoolGeometry& g,
                bool count_include_pad) {
  check_pool_operands("cuda::avg_pool2d", x, out);
  DeviceGuard guard(out.device());
  dispatch_floating(out.dtype(), "cuda::avg_pool2d", [&](auto zero) {
    using T = decltype(zero);
    launch_avg_pool2d<T>(x.data<T>(), out.data<T>(), planes, g, count_include_pad, compute_stream(out.device()));
  });
}

}  // namespace engine::cuda
