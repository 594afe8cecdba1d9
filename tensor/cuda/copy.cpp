// copy.cpp (cuda): host side of the CUDA copy, fill and in-place update (copy.h).
#include "tensor/cuda/copy.h"

#include <cstring>

#include "tensor/backend.h"
#include "tensor/cpu/loops.h"
#include "tensor/cuda/copy_launch.h"
#include "tensor/cuda/elementwise.h"
#include "tensor/dispatch.h"
#include "tensor/kernels/convert.h"
#include "tensor/kernels/elementwise.h"

namespace engine::cuda {

static_assert(int(DType::f32) == kernels::kF32 && int(DType::bf16) == kernels::kBf16 &&
                  int(DType::boolean) == kernels::kBool,
              "kernels/convert.h's type codes must follow DType");

namespace {
void check_pair(const char* op, const Tensor& dst, const Tensor& src) {
  ENGINE_CHECK(src.device() == dst.device(), "{}: source on {} but destination on {}; copy between devices with .to()",
               op, src.device().str(), dst.device().str());
  check_device(dst.device(), op);
}
}  // namespace

void copy_(const Tensor& dst, const Tensor& src) {
  check_pair("copy_", dst, src);
  if (dst.numel() == 0) return;
  DeviceGuard guard(dst.device());
  const Stream stream = compute_stream(dst.device());
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous() && src.sizes() == dst.sizes()) {
    // One block of bytes (clone, contiguous of a contiguous source): a stream-ordered memcpy.
    backend::copy_bytes(dst.raw_data(), dst.device(), src.raw_data(), src.device(), dst.nbytes(), "copy_");
    return;
  }
  if (dst.dtype() == src.dtype()) {
    // Whole elements of the right width: bit-exact for every dtype.
    switch (dtype_size(dst.dtype())) {
      case 1: map_unary<uint8_t, uint8_t>(dst, src, kernels::IdentityFn{}); break;
      case 2: map_unary<uint16_t, uint16_t>(dst, src, kernels::IdentityFn{}); break;
      case 4:
        if (dst.dtype() == DType::f32) map_unary<float, float>(dst, src, kernels::IdentityFn{});
        else map_unary<int32_t, int32_t>(dst, src, kernels::IdentityFn{});
        break;
      default:
        if (dst.dtype() == DType::f64) map_unary<double, double>(dst, src, kernels::IdentityFn{});
        else map_unary<int64_t, int64_t>(dst, src, kernels::IdentityFn{});
        break;
    }
    return;
  }
  const StridedGeometry<2> g =
      strided_geometry<2>(dst.sizes(), {dst.strides(), cpu::broadcast_strides(src, dst.sizes())});
  launch_copy_convert(g, dst.raw_data(), int(dst.dtype()), int(dtype_size(dst.dtype())), src.raw_data(),
                      int(src.dtype()), int(dtype_size(src.dtype())), stream);
}

void fill_(const Tensor& dst, double value) {
  check_device(dst.device(), "fill_");
  if (dst.numel() == 0) return;
  DeviceGuard guard(dst.device());
  uint64_t pattern = 0;
  kernels::store_from_double(&pattern, int(dst.dtype()), value);
  const StridedGeometry<1> g = strided_geometry<1>(dst.sizes(), {dst.strides()});
  launch_fill_pattern(g, dst.raw_data(), int(dtype_size(dst.dtype())), pattern, compute_stream(dst.device()));
}

void add_(const Tensor& dst, const Tensor& src, double alpha) {
  check_pair("add_", dst, src);
  dispatch_floating(dst.dtype(), "add_", [&](auto zero) {
    using T = decltype(zero);
    map_binary<T, T>(dst, dst, src, kernels::AddScaledFn{alpha});
  });
}

void mul_(const Tensor& dst, double value) {
  check_device(dst.device(), "mul_");
  dispatch_floating(dst.dtype(), "mul_", [&](auto zero) {
    using T = decltype(zero);
    map_unary<T, T>(dst, dst, kernels::MulScalarFn{value});
  });
}

}  // namespace engine::cuda
