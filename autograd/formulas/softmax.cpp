// softmax.cpp: backward formulas of softmax, log_softmax and cross_entropy (y = the op's saved
// output, Note [saved outputs]; sums along the softmax dim, kept):
//
//   softmax:        dx = y * (g - sum(g * y, dim))
//   log_softmax:    dx = g - exp(y) * sum(g, dim)
//   cross_entropy:  dlogits = (softmax(logits, 1) - onehot(target)) * g / N   (g is a scalar)
//
// Each formula has two equal implementations. Under create_graph (grad mode on during backward)
// it is written with differentiable ops, so a double backward differentiates it (softmax's own
// backward then runs again, recursively). Otherwise no graph can be recorded anyway, and a fused
// kernel (tensor/kernels/softmax.h) computes the same numbers in one pass over each line.
#include "autograd/formulas/softmax.h"

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/cpu/reduce.h"
#include "tensor/dispatch.h"
#include "tensor/kernels/softmax.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/softmax.h"
#endif

namespace engine::autograd::formulas {

namespace {

// Fused first-order backward of softmax (log = false) or log_softmax (log = true).
Tensor softmax_backward_fused(const Tensor& g, const Tensor& y, int dim, bool log) {
  ENGINE_OP(log ? "log_softmax_backward" : "softmax_backward", g, y);
  Tensor dx = empty(y.sizes(), opts(y.dtype(), y.device()));
  if (use_cuda("softmax_backward", y)) {
#if ENGINE_WITH_CUDA
    cuda::softmax_backward_lines(dx, g, y, dim, log);
#endif
    return dx;
  }
  const int64_t n = cpu::line_size(y, dim);
  const int64_t gs = cpu::line_stride(g, dim), ys = cpu::line_stride(y, dim), ds = cpu::line_stride(dx, dim);
  dispatch_floating(y.dtype(), "softmax_backward", [&](auto zero) {
    using T = decltype(zero);
    const T* gp = g.data<T>();
    const T* yp = y.data<T>();
    T* dp = dx.data<T>();
    cpu::for_each_line<3>(y.sizes(), dim, {g.strides(), y.strides(), dx.strides()},
                          [&](const std::array<int64_t, 3>& off) {
                            if (log)
                              kernels::log_softmax_backward_line(gp + off[0], gs, yp + off[1], ys, dp + off[2], ds, n);
                            else
                              kernels::softmax_backward_line(gp + off[0], gs, yp + off[1], ys, dp + off[2], ds, n);
                          });
  });
  return dx;
}

// Fused first-order backward of cross_entropy: (softmax(x) - onehot) * g * inv_n, row by row
// (g: the one-element upstream gradient).
Tensor cross_entropy_backward_fused(const Tensor& logits, const Tensor& target, const Tensor& g, double inv_n) {
  ENGINE_OP("cross_entropy_backward", logits, target);
  Tensor dx = empty(logits.sizes(), opts(logits.dtype(), logits.device()));
  if (use_cuda("cross_entropy_backward", logits)) {
#if ENGINE_WITH_CUDA
    cuda::cross_entropy_backward(dx, logits, target, g, inv_n);  // g is read by the kernel
#endif
    return dx;
  }
  const double scale = g.item() * inv_n;
  const int64_t c = logits.size(1), xs = logits.stride(1), ts = target.stride(0);
  const int64_t* t = target.data<int64_t>();
  dispatch_floating(logits.dtype(), "cross_entropy_backward", [&](auto zero) {
    using T = decltype(zero);
    const T* x = logits.data<T>();
    T* d = dx.data<T>();
    cpu::for_each_line<2>(logits.sizes(), 1, {logits.strides(), dx.strides()}, [&](const std::array<int64_t, 2>& off) {
      const int64_t row = off[1] / (c > 0 ? c : 1);
      kernels::cross_entropy_backward_row(x + off[0], xs, d + off[1], int64_t(1), c, t[row * ts], T(scale));
    });
  });
  return dx;
}

}  // namespace

Tensor one_hot_rows(const Tensor& target, int64_t num_classes, DType dtype) {
  ENGINE_OP("one_hot_rows", target);
  if (use_cuda("one_hot_rows", target)) {
    Tensor out = empty({target.size(0), num_classes}, opts(dtype, target.device()));
#if ENGINE_WITH_CUDA
    cuda::one_hot_rows(out, target);
#endif
    return out;
  }
  Tensor out = zeros({target.size(0), num_classes}, opts(dtype, target.device()));
  const int64_t* t = target.data<int64_t>();
  const int64_t ts = target.stride(0);
  dispatch_floating(dtype, "one_hot_rows", [&](auto zero) {
    using T = decltype(zero);
    T* o = out.data<T>();
    for (int64_t i = 0; i < target.size(0); ++i) o[i * num_classes + t[i * ts]] = T(1);
  });
  return out;
}

void softmax(const Tensor& x, const Tensor& out, int dim) {
  auto node = record("SoftmaxBackward", {x}, {out});
  if (!node) return;
  node->save(out, SaveMode::exact);  // Note [saved outputs]
  node->backward_fn = [dim](Node& n, const TensorList& g) -> TensorList {
    Tensor y = n.saved(0);
    if (!grad_enabled()) return {softmax_backward_fused(g[0], y, dim, false)};
    return {mul(y, sub(g[0], sum(mul(g[0], y), {dim}, /*keepdim=*/true)))};
  };
}

void log_softmax(const Tensor& x, const Tensor& out, int dim) {
  auto node = record("LogSoftmaxBackward", {x}, {out});
  if (!node) return;
  node->save(out, SaveMode::exact);  // Note [saved outputs]
  node->backward_fn = [dim](Node& n, const TensorList& g) -> TensorList {
    Tensor y = n.saved(0);
    if (!grad_enabled()) return {softmax_backward_fused(g[0], y, dim, true)};
    return {sub(g[0], mul(exp(y), sum(g[0], {dim}, /*keepdim=*/true)))};
  };
}

void cross_entropy(const Tensor& logits, const Tensor& target, const Tensor& out) {
  auto node = record("CrossEntropyBackward", {logits}, {out});
  if (!node) return;
  node->save(logits, SaveMode::exact);
  node->save(target, SaveMode::exact);
  node->backward_fn = [](Node& n, const TensorList& g) -> TensorList {
    Tensor x = n.saved(0), t = n.saved(1);
    const double inv_n = 1.0 / double(x.size(0));
    if (!grad_enabled()) return {cross_entropy_backward_fused(x, t, g[0], inv_n)};
    Tensor onehot = one_hot_rows(t, x.size(1), x.dtype());
    return {mul(sub(softmax(x, 1), onehot), mul(g[0], inv_n))};
  };
}

}  // namespace engine::autograd::formulas
