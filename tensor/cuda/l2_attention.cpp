// l2_attention.cpp (cuda): host side of the fused L2 attention kernels (l2_attention.h): checks,
// the D scratch (arena memory) and the launches.
#include "tensor/cuda/l2_attention.h"

#include "tensor/cuda/device.h"
#include "tensor/cuda/l2_attention_launch.h"
#include "tensor/dispatch.h"

namespace engine::cuda {

namespace {

void check_on_device(const char* op, const Tensor& like, std::initializer_list<const Tensor*> ts) {
  check_device(like.device(), op);
  for (const Tensor* t : ts)
    if (t->defined())
      ENGINE_CHECK(t->device() == like.device() && t->dtype() == like.dtype(),
                   "{}: operand {} on {} but q is {} on {}", op, dtype_name(t->dtype()), t->device().str(),
                   dtype_name(like.dtype()), like.device().str());
}

template <typename T>
T* mut(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

}  // namespace

void l2_attention_forward(const kernels::L2AttnGeom& g, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse) {
  const char* op = "cuda::l2_attention_forward";
  check_on_device(op, q, {&k, &v, &out, &lse});
  ENGINE_CHECK(out.is_contiguous() && lse.is_contiguous(), "{}: out and lse must be contiguous", op);
  DeviceGuard guard(q.device());
  dispatch_floating(q.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    launch_l2_attention_forward<T>(g, q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<T>(),
                                   compute_stream(q.device()));
  });
}

void l2_attention_backward(const kernels::L2AttnGeom& g, const Tensor& grad_out, const Tensor& q, const Tensor& k,
                           const Tensor& v, const Tensor& out, const Tensor& lse, const Tensor& dq, const Tensor& dk,
                           const Tensor& dv) {
  const char* op = "cuda::l2_attention_backward";
  check_on_device(op, q, {&grad_out, &k, &v, &out, &lse, &dq, &dk, &dv});
  for (const Tensor* t : {&grad_out, &out, &lse, &dq, &dk, &dv})
    ENGINE_CHECK(!t->defined() || t->is_contiguous(), "{}: grad_out, out, lse and the gradients must be contiguous",
                 op);
  DeviceGuard guard(q.device());
  const Tensor D = empty({g.B, g.H, g.Tq}, opts(q.dtype(), q.device()));
  dispatch_floating(q.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    launch_l2_attention_backward<T>(g, grad_out.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(),
                                    lse.data<T>(), D.data<T>(), mut<T>(dq), mut<T>(dk), mut<T>(dv),
                                    compute_stream(q.device()));
  });
}

}  // namespace engine::cuda
