// ops_softmax.cpp: softmax and log_softmax along one dim, and cross_entropy over class logits.
// The math (max-shifted, sums in double) is in tensor/kernels/softmax.h; lines along the dim are
// spread over threads by cpu::for_each_line (any input strides, no copy); the backward formulas
// are in autograd/formulas/softmax.cpp. CUDA tensors run the same line bodies, one GPU thread
// per line (tensor/cuda/softmax.h).
#include "autograd/formulas/softmax.h"
#include "tensor/cpu/reduce.h"
#include "tensor/dispatch.h"
#include "tensor/kernels/softmax.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/softmax.h"
#endif

namespace engine {

namespace F = autograd::formulas;

namespace {

Tensor softmax_impl(const char* op, const Tensor& x, int64_t dim, bool log) {
  ENGINE_CHECK(x.defined(), "{}: undefined input", op);
  check_floating(op, x);
  const int d = wrap_dim(dim, x.dim(), op);
  Tensor out = empty(x.sizes(), opts(x.dtype(), x.device()));
  if (use_cuda(op, x)) {
#if ENGINE_WITH_CUDA
    cuda::softmax_lines(out, x, d, log);
#endif
    return out;
  }
  const int64_t n = cpu::line_size(x, d), xs = cpu::line_stride(x, d), os = cpu::line_stride(out, d);
  dispatch_floating(x.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    const T* src = x.data<T>();
    T* dst = out.data<T>();
    cpu::for_each_line<2>(x.sizes(), d, {x.strides(), out.strides()}, [&](const std::array<int64_t, 2>& off) {
      if (log)
        kernels::log_softmax_line(src + off[0], xs, dst + off[1], os, n);
      else
        kernels::softmax_line(src + off[0], xs, dst + off[1], os, n);
    });
  });
  return out;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  ENGINE_OP("softmax", x);
  Tensor out = softmax_impl("softmax", x, dim, false);
  F::softmax(x, out, wrap_dim(dim, x.dim(), "softmax"));
  return out;
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  ENGINE_OP("log_softmax", x);
  Tensor out = softmax_impl("log_softmax", x, dim, true);
  F::log_softmax(x, out, wrap_dim(dim, x.dim(), "log_softmax"));
  return out;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target) {
  ENGINE_OP("cross_entropy", logits, target);
  ENGINE_CHECK(logits.defined() && target.defined(), "cross_entropy: undefined input");
  check_floating("cross_entropy", logits);
  ENGINE_CHECK(logits.device() == target.device(), "cross_entropy: logits on {} but target on {}",
               logits.device().str(), target.device().str());
  ENGINE_CHECK(logits.dim() == 2, "cross_entropy: expected logits of shape [N, C], got {}", logits.sizes().str());
  ENGINE_CHECK(target.dtype() == DType::i64, "cross_entropy: expected an i64 target, got {}",
               dtype_name(target.dtype()));
  const int64_t n = logits.size(0), c = logits.size(1);
  ENGINE_CHECK(target.dim() == 1 && target.size(0) == n,
               "cross_entropy: target of shape {} does not match logits of shape {} (expected [{}])",
               target.sizes().str(), logits.sizes().str(), n);
  ENGINE_CHECK(c > 0 || n == 0, "cross_entropy: logits have no classes (shape {})", logits.sizes().str());
  // The range check of the targets reads them on the host: for a CUDA target an explicit copy
  // (one small device -> host transfer that synchronises), so that a bad label is an error naming
  // it instead of an out-of-bounds read in the kernel.
  const Tensor target_host = target.device().is_cpu() ? target : target.to(Device::cpu());
  const int64_t* t = target_host.data<int64_t>();
  const int64_t ts = target_host.stride(0);
  for (int64_t i = 0; i < n; ++i)
    ENGINE_CHECK(t[i * ts] >= 0 && t[i * ts] < c, "cross_entropy: target {} out of range [0, {}) at index {}",
                 t[i * ts], c, i);

  Tensor out = empty({}, opts(logits.dtype(), logits.device()));
  if (use_cuda("cross_entropy", logits)) {
#if ENGINE_WITH_CUDA
    cuda::cross_entropy(out, logits, target);
#endif
    F::cross_entropy(logits, target, out);
    return out;
  }
  Tensor losses = empty({n}, opts(DType::f64, logits.device()));  // per-row losses, summed in order
  dispatch_floating(logits.dtype(), "cross_entropy", [&](auto zero) {
    using T = decltype(zero);
    const T* x = logits.data<T>();
    double* l = losses.data<double>();
    const int64_t xs = logits.stride(1);
    cpu::for_each_line<2>(logits.sizes(), 1, {logits.strides(), Dims{1, 0}}, [&](const std::array<int64_t, 2>& off) {
      l[off[1]] = kernels::cross_entropy_row(x + off[0], xs, c, t[off[1] * ts]);
    });
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += l[i];
    out.data<T>()[0] = T(total / double(n));  // N = 0: 0/0 = NaN, as PyTorch
  });
  F::cross_entropy(logits, target, out);
  return out;
}

}  // namespace engine
