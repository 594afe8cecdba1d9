// reduce.cpp: backward formulas of the reductions.
//
//   sum:   dx = expand(g, x.shape)
//   mean:  dx = expand(g, x.shape) / count
#include "autograd/formulas/reduce.h"

#include "autograd/node.h"
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

}  // namespace engine::autograd::formulas
