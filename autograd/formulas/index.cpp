// index.cpp: backward formulas of the indexing family. Every formula is made of differentiable
// ops, and the family is closed under differentiation, so any order of derivative works:
//
//   gather(x, d, idx):          dx   = scatter_add(zeros(x.shape), d, idx, g)
//   scatter_add(x, d, idx, s):  dx   = g
//                               ds   = gather(g, d, idx)   (zero-padded to s.shape when idx is
//                                                           smaller than s: those s are unused)
//   index_select(x, d, idx):    dx   = index_add(zeros(x.shape), d, idx, g)
//   index_add(x, d, idx, s):    dx   = g
//                               ds   = index_select(g, d, idx)
//   cat(x_0..x_k, d):           dx_i = narrow(g, d, offset_i, x_i.shape[d])
//   stack(x_0..x_k, d):         dx_i = select(g, d, i)
//
// gather and scatter_add are each other's adjoint (both are linear in the differentiable
// argument); so are index_select and index_add. Only the integer index is saved: none of the
// formulas needs the values of x or src. split and chunk are narrow() views and need nothing here.
#include "autograd/formulas/index.h"

#include "autograd/node.h"
#include "tensor/ops.h"

namespace engine::autograd::formulas {

void gather(const Tensor& x, int dim, const Tensor& index, const Tensor& out) {
  auto node = record("GatherBackward", {x}, {out});
  if (!node) return;
  node->save(index);
  const Dims xs = x.sizes();
  node->backward_fn = [xs, dim](Node& n, const TensorList& g) -> TensorList {
    return {scatter_add(zeros(xs, opts(g[0].dtype(), g[0].device())), dim, n.saved(0), g[0])};
  };
}

void index_select(const Tensor& x, int dim, const Tensor& index, const Tensor& out) {
  auto node = record("IndexSelectBackward", {x}, {out});
  if (!node) return;
  node->save(index);
  const Dims xs = x.sizes();
  node->backward_fn = [xs, dim](Node& n, const TensorList& g) -> TensorList {
    return {index_add(zeros(xs, opts(g[0].dtype(), g[0].device())), dim, n.saved(0), g[0])};
  };
}

void scatter_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src, const Tensor& out) {
  auto node = record("ScatterAddBackward", {x, src}, {out});
  if (!node) return;
  node->save(node->needs_input_grad(1) ? index : Tensor());
  const Dims ss = src.sizes();
  node->backward_fn = [ss, dim](Node& n, const TensorList& g) -> TensorList {
    Tensor dsrc;
    if (n.needs_input_grad(1)) {
      dsrc = gather(g[0], dim, n.saved(0));
      // Elements of src outside the index's box are never read by the forward: zero gradient.
      if (dsrc.sizes() != ss) {
        Dims origin;
        origin.resize(ss.size(), 0);
        dsrc = pad_into(dsrc, ss, origin);
      }
    }
    return {n.needs_input_grad(0) ? g[0] : Tensor(), dsrc};
  };
}

void index_add(const Tensor& x, int dim, const Tensor& index, const Tensor& src, const Tensor& out) {
  auto node = record("IndexAddBackward", {x, src}, {out});
  if (!node) return;
  node->save(node->needs_input_grad(1) ? index : Tensor());
  node->backward_fn = [dim](Node& n, const TensorList& g) -> TensorList {
    return {n.needs_input_grad(0) ? g[0] : Tensor(),
            n.needs_input_grad(1) ? index_select(g[0], dim, n.saved(0)) : Tensor()};
  };
}

void cat(const TensorList& xs, int dim, const Tensor& out) {
  auto node = record("CatBackward", xs, {out});
  if (!node) return;
  std::vector<int64_t> lengths;
  lengths.reserve(xs.size());
  for (const Tensor& x : xs) lengths.push_back(x.size(dim));
  node->backward_fn = [lengths, dim](Node& n, const TensorList& g) -> TensorList {
    TensorList dx(lengths.size());
    int64_t offset = 0;
    for (size_t i = 0; i < lengths.size(); ++i) {
      if (n.needs_input_grad(i)) dx[i] = narrow(g[0], dim, offset, lengths[i]);
      offset += lengths[i];
    }
    return dx;
  };
}

void stack(const TensorList& xs, int dim, const Tensor& out) {
  auto node = record("StackBackward", xs, {out});
  if (!node) return;
  const size_t count = xs.size();
  node->backward_fn = [count, dim](Node& n, const TensorList& g) -> TensorList {
    TensorList dx(count);
    for (size_t i = 0; i < count; ++i)
      if (n.needs_input_grad(i)) dx[i] = select(g[0], dim, int64_t(i));
    return dx;
  };
}

}  // namespace engine::autograd::formulas
