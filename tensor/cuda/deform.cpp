// deform.cpp (cuda): host side of deform_conv2d's CUDA kernels (deform.h): operand checks and
// launches.
#include "tensor/cuda/deform.h"

#include "tensor/cuda/device.h"
#include "tensor/dispatch.h"

namespace engine::cuda {

namespace {

// Defined operands must be contiguous, of `like`'s dtype, on its device.
void check_operands(const char* op, const Tensor& like, std::initializer_list<const Tensor*> ts) {
  check_device(like.device(), op);
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    ENGINE_CHECK(t->device() == like.device() && t->dtype() == like.dtype() && t->is_contiguous(),
                 "{}: operand of shape {} ({} on {}) must be contiguous {} on {}", op, t->sizes().str(),
                 dtype_name(t->dtype()), t->device().str(), dtype_name(like.dtype()), like.device().str());
  }
}

template <typename T>
const T* ptr(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}
template <typename T>
T* mut(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace

void deform_conv2d_forward(const DeformConvShape& s, const Tensor& x, const Tensor& offset, const Tensor& weight,
                           const Tensor& bias, const Tensor& mask, const Tensor& out) {
  check_operands("cuda::deform_conv2d", out, {&x, &offset, &weight, &bias, &mask});
  DeviceGuard guard(out.device());
  dispatch_floating(out.dtype(), "cuda::deform_conv2d", [&](auto zero) {
    using T = decltype(zero);
    DeformConvArgs<T> a;
    a.x = ptr<T>(x), a.offset = ptr<T>(offset), a.mask = ptr<T>(mask), a.weight = ptr<T>(weight);
    a.bias = ptr<T>(bias);
    launch_deform_forward<T>(s, a, out.data<T>(), compute_stream(out.device()));
  });
}

void deform_conv2d_backward(const DeformConvShape& s, const Tensor& grad_out, const Tensor& x, const Tensor& offset,
                            const Tensor& weight, const Tensor& mask, const Tensor& grad_x, const Tensor& grad_offset,
                            const Tensor& grad_weight, const Tensor& grad_bias, const Tensor& grad_mask) {
  check_operands("cuda::deform_conv2d_backward", grad_out,
                 {&x, &offset, &weight, &mask, &grad_x, &grad_offset, &grad_weight, &grad_bias, &grad_mask});
  DeviceGuard guard(grad_out.device());
  dispatch_floating(grad_out.dtype(), "cuda::deform_conv2d_backward", [&](auto zero) {
    using T = decltype(zero);
    DeformConvArgs<T> a;
    a.x = ptr<T>(x), a.offset = ptr<T>(offset), a.mask = ptr<T>(mask), a.weight = ptr<T>(weight);
    a.grad_out = ptr<T>(grad_out);
    launch_deform_backward<T>(s, a, mut<T>(grad_x), mut<T>(grad_offset), mut<T>(grad_weight), mut<T>(grad_bias),
                              mut<T>(grad_mask), compute_stream(grad_out.device()));
  });
}

}  // namespace engine::cuda
