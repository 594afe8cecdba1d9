// fused.cpp (cuda): checks the device of every operand and launches the fused kernels (fused.cu)
// on the tensors' compute stream.
#include "tensor/cuda/fused.h"

#include "tensor/cuda/device.h"
#include "tensor/cuda/fused_launch.h"

namespace engine::cuda {

namespace {

void check_on(const char* op, const Tensor& t, Device d) {
  ENGINE_CHECK(!t.defined() || (t.device() == d && t.is_contiguous()),
               "{}: expected a contiguous tensor on {}, got one on {}", op, d.str(), t.device().str());
}

}  // namespace

void bias_act(const Tensor& out, const Tensor& x, const Tensor& b, int64_t C, int64_t inner,
              const kernels::BiasActParams& p) {
  const Device d = out.device();
  check_device(d, "cuda::bias_act");
  for (const Tensor* t : {&out, &x, &b}) check_on("cuda::bias_act", *t, d);
  DeviceGuard guard(d);
  const Stream s = compute_stream(d);
  if (out.dtype() == DType::f32)
    launch_bias_act(out.data<float>(), x.data<float>(), b.defined() ? b.data<float>() : nullptr, out.numel(), C,
                    inner, p, s);
  else
    launch_bias_act(out.data<double>(), x.data<double>(), b.defined() ? b.data<double>() : nullptr, out.numel(),
                    C, inner, p, s);
}

void bias_act_grad(const Tensor& out, const Tensor& gy, const Tensor& y, const kernels::BiasActParams& p) {
  const Device d = out.device();
  check_device(d, "cuda::bias_act_grad");
  for (const Tensor* t : {&out, &gy, &y}) check_on("cuda::bias_act_grad", *t, d);
  DeviceGuard guard(d);
  const Stream s = compute_stream(d);
  if (out.dtype() == DType::f32)
    launch_bias_act_grad(out.data<float>(), gy.data<float>(), y.data<float>(), out.numel(), p, s);
  else
    launch_bias_act_grad(out.data<double>(), gy.data<double>(), y.data<double>(), out.numel(), p, s);
}

void adamw_update(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, int64_t offset, int64_t numel,
                  const kernels::AdamWStep& st) {
  const Device d = p.device();
  check_device(d, "cuda::adamw_update");
  for (const Tensor* t : {&p, &g, &m, &v}) check_on("cuda::adamw_update", *t, d);
  DeviceGuard guard(d);
  const Stream s = compute_stream(d);
  if (p.dtype() == DType::f32)
    launch_adamw(p.data<float>() + offset, g.data<float>() + offset, m.data<float>() + offset,
                 v.data<float>() + offset, numel, st, s);
  else
    launch_adamw(p.data<double>() + offset, g.data<double>() + offset, m.data<double>() + offset,
                 v.data<double>() + offset, numel, st, s);
}

}  // namespace engine::cuda
