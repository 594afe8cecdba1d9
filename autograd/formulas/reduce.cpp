// reduce.cpp: backward formulas of the reductions, written with differentiable ops so that they
// can be differentiated again (double backward). g_b is the output gradient reshaped to
// broadcast against x (reduced dims as size 1), out_b likewise for the output.
//
//   sum:        dx = expand(g_b, x.shape)
//   mean:       dx = expand(g_b, x.shape) / n
//   amax/amin:  dx = mask * g_b / count_b,   mask = (x == out_b), count = sum(mask, dims)
//               (ties share the gradient equally, as PyTorch; mask is a constant, its
//               derivative is zero almost everywhere)
//   logsumexp:  dx = g_b * exp(x - out_b)                          (= g_b * softmax(x))
//   var:        dx = 2 (x - mean(x, dims)) g_b / max(0, n - correction)
#include "autograd/formulas/reduce.h"

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/cpu/elementwise.h"
#include "tensor/dispatch.h"
#include "tensor/kernels/reduce.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"

namespace engine::autograd::formulas {

Tensor unsqueeze_reduced(const Tensor& g, const Dims& x_sizes, const Dims& dims, bool keepdim) {
  if (keepdim) return g;
  Dims shape;
  bool reduced[kMaxDims] = {false};
  const int nd = x_sizes.size();
  if (dims.empty()) {
    for (int d = 0; d < nd; ++d) reduced[d] = true;
  } else {
    for (int64_t d : dims) reduced[wrap_dim(d, nd, "reduce")] = true;
  }
  for (int d = 0; d < nd; ++d) shape.push_back(reduced[d] ? 1 : x_sizes[d]);
  return reshape(g, shape);
}

Tensor extremum_mask(const Tensor& x, const Tensor& out_keepdim) {
  ENGINE_OP("extremum_mask", x, out_keepdim);
  // On CUDA: the same 0/1 mask from the comparison kernel (x == out exactly, as EqMaskFn) and a
  // bool -> float conversion (both exact).
  if (use_cuda("extremum_mask", x)) return to_dtype(eq(x, out_keepdim), x.dtype());
  Tensor mask = empty(x.sizes(), opts(x.dtype(), x.device()));
  dispatch_floating(x.dtype(), "extremum_mask", [&](auto zero) {
    using T = decltype(zero);
    cpu::map_binary<T, T>(mask, x, out_keepdim, kernels::EqMaskFn{});
  });
  return mask;
}

void sum(const Tensor& x, const Tensor& out, const Dims& dims, bool keepdim) {
  auto node = record("SumBackward", {x}, {out});
  if (!node) return;
  const Dims xs = x.sizes();
  node->backward_fn = [=](Node&, const TensorList& g) -> TensorList {
    return {expand(unsqueeze_reduced(g[0], xs, dims, keepdim), xs)};
  };
}

void mean(const Tensor& x, const Tensor& out, const Dims& dims, bool keepdim, int64_t count) {
  auto node = record("MeanBackward", {x}, {out});
  if (!node) return;
  const Dims xs = x.sizes();
  node->backward_fn = [=](Node&, const TensorList& g) -> TensorList {
    return {expand(div(unsqueeze_reduced(g[0], xs, dims, keepdim), double(count)), xs)};
  };
}

void amax_amin(const char* name, const Tensor& x, const Tensor& out, const Dims& dims, bool keepdim) {
  auto node = record(name, {x}, {out});
  if (!node) return;
  node->save(x, SaveMode::exact);
  node->save(out, SaveMode::exact);  // Note [saved outputs]
  const Dims xs = x.sizes();
  node->backward_fn = [=](Node& n, const TensorList& g) -> TensorList {
    Tensor mask, count;
    {
      // The mask and the tie count are constants of the formula (no graph).
      NoGradGuard no_grad;
      mask = extremum_mask(n.saved(0).detach(), unsqueeze_reduced(n.saved(1).detach(), xs, dims, keepdim));
      count = sum(mask, dims, /*keepdim=*/true);
    }
    return {mul(mask, div(unsqueeze_reduced(g[0], xs, dims, keepdim), count))};
  };
}

void logsumexp(const Tensor& x, const Tensor& out, const Dims& dims, bool keepdim) {
  auto node = record("LogsumexpBackward", {x}, {out});
  if (!node) return;
  node->save(x, SaveMode::exact);
  node->save(out, SaveMode::exact);  // Note [saved outputs]
  const Dims xs = x.sizes();
  node->backward_fn = [=](Node& n, const TensorList& g) -> TensorList {
    Tensor out_b = unsqueeze_reduced(n.saved(1), xs, dims, keepdim);
    return {mul(unsqueeze_reduced(g[0], xs, dims, keepdim), exp(sub(n.saved(0), out_b)))};
  };
}

void var(const Tensor& x, const Tensor& out, const Dims& dims, int64_t correction, bool keepdim, int64_t count) {
  auto node = record("VarBackward", {x}, {out});
  if (!node) return;
  node->save(x, SaveMode::exact);
  const Dims xs = x.sizes();
  const double dof = double(count - correction > 0 ? count - correction : 0);
  node->backward_fn = [=](Node& n, const TensorList& g) -> TensorList {
    Tensor xv = n.saved(0);
    Tensor centered = sub(xv, mean(xv, dims, /*keepdim=*/true));
    return {mul(centered, mul(unsqueeze_reduced(g[0], xs, dims, keepdim), 2.0 / dof))};
  };
}

}  // namespace engine::autograd::formulas
