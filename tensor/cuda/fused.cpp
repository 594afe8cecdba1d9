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

void modulated_weight(const Tensor& W, const Tensor& K, const Tensor& s, const Tensor& scratch,
                      const kernels::ModWeightDims& dims) {
  const Device d = W.device();
  check_device(d, "cuda::modulated_weight");
  for (const Tensor* t : {&W, &K, &s, &scratch}) check_on("cuda::modulated_weight", *t, d);
  DeviceGuard guard(d);
  const Stream st = compute_stream(d);
  const kernels::ModWeightScratch w = kernels::mw_scratch(dims, scratch.data<double>(), false);
  if (W.dtype() == DType::f32)
    launch_modulated_weight(W.data<float>(), K.data<float>(), s.data<float>(), w, dims, st);
  else
    launch_modulated_weight(W.data<double>(), K.data<double>(), s.data<double>(), w, dims, st);
}

void modulated_weight_grad(const Tensor& dK, const Tensor& ds, const Tensor& G, const Tensor& K, const Tensor& s,
                           const Tensor& scratch, const kernels::ModWeightDims& dims) {
  const Device d = G.device();
  check_device(d, "cuda::modulated_weight_grad");
  for (const Tensor* t : {&dK, &ds, &G, &K, &s, &scratch}) check_on("cuda::modulated_weight_grad", *t, d);
  DeviceGuard guard(d);
  const Stream st = compute_stream(d);
  const kernels::ModWeightScratch w = kernels::mw_scratch(dims, scratch.data<double>(), true);
  if (G.dtype() == DType::f32)
    launch_modulated_weight_grad(dK.defined() ? dK.data<float>() : nullptr, ds.defined() ? ds.data<float>() : nullptr,
                                 G.data<float>(), K.data<float>(), s.data<float>(), w, dims, st);
  else
    launch_modulated_weight_grad(dK.defined() ? dK.data<double>() : nullptr,
                                 ds.defined() ? ds.data<double>() : nullptr, G.data<double>(), K.data<double>(),
                                 s.data<double>(), w, dims, st);
}

}  // namespace engine::cuda
