// view.cpp: backward formulas of the view family. Every formula is written with differentiable
// ops, so each is itself differentiable (double backward).
//
//   reshape/view:  dx = reshape(g, x.shape)
//   permute(p):    dx = permute(g, p^-1)
//   slice:         dx = slice_backward(g) (zeros with g at the slice); its backward is slice again
//   expand:        dx = sum_to(g, x.shape)
//   as_strided:    dx[j] = sum of g[i] over view elements i that alias storage element j of x
//   clone/contiguous: dx = g;  to_dtype: dx = g converted back;  pad_into: dx = the region of g
#include "autograd/formulas/view.h"

#include <algorithm>

#include "autograd/node.h"
#include "tensor/ops.h"

namespace engine::autograd::formulas {

void reshape_like(const Tensor& x, const Tensor& out) {
  auto node = record("ViewBackward", {x}, {out});
  if (!node) return;
  const Dims shape = x.sizes();
  node->backward_fn = [shape](Node&, const TensorList& g) -> TensorList { return {reshape(g[0], shape)}; };
}

void permute(const Tensor& x, const Tensor& out, const Dims& dims) {
  auto node = record("PermuteBackward", {x}, {out});
  if (!node) return;
  Dims inverse;
  inverse.resize(dims.size());
  for (int i = 0; i < dims.size(); ++i) inverse[int(dims[i])] = i;
  node->backward_fn = [inverse](Node&, const TensorList& g) -> TensorList { return {permute(g[0], inverse)}; };
}

void slice(const Tensor& x, const Tensor& out, int dim, int64_t start, int64_t end, int64_t step) {
  auto node = record("SliceBackward", {x}, {out});
  if (!node) return;
  const Dims shape = x.sizes();
  node->backward_fn = [=](Node&, const TensorList& g) -> TensorList {
    return {slice_backward(g[0], shape, dim, start, end, step)};
  };
}

void slice_backward(const Tensor& g, const Tensor& out, int dim, int64_t start, int64_t end, int64_t step) {
  auto node = record("SliceBackwardBackward", {g}, {out});
  if (!node) return;
  node->backward_fn = [=](Node&, const TensorList& gg) -> TensorList {
    return {engine::slice(gg[0], dim, start, end, step)};
  };
}

void expand(const Tensor& x, const Tensor& out) {
  auto node = record("ExpandBackward", {x}, {out});
  if (!node) return;
  const Dims shape = x.sizes();
  node->backward_fn = [shape](Node&, const TensorList& g) -> TensorList { return {sum_to(g[0], shape)}; };
}

namespace {
// Storage offsets (relative to `base`) of every element of a geometry, in logical order, as an
// i64 tensor on `device` (the gradient's: index_add/index_select want their index beside the data).
Tensor storage_offsets(const Dims& sizes, const Dims& strides, int64_t offset, int64_t base, Device device) {
  std::vector<int64_t> v(size_t(sizes.product()));
  Dims idx;
  idx.resize(sizes.size());
  for (size_t i = 0; i < v.size(); ++i) {
    int64_t o = offset - base;
    for (int d = 0; d < sizes.size(); ++d) o += idx[d] * strides[d];
    v[i] = o;
    for (int d = sizes.size() - 1; d >= 0; --d) {
      if (++idx[d] < sizes[d]) break;
      idx[d] = 0;
    }
  }
  return from_vector_i64(v, {int64_t(v.size())}, opts(DType::i64, device));
}
int64_t extent_end(const Dims& sizes, const Dims& strides, int64_t offset) {
  int64_t e = offset;
  for (int d = 0; d < sizes.size(); ++d)
    if (sizes[d] > 0) e += (sizes[d] - 1) * strides[d];
  return e + 1;
}
}  // namespace

void as_strided(const Tensor& x, const Tensor& out) {
  auto node = record("AsStridedBackward", {x}, {out});
  if (!node) return;
  const Dims xs = x.sizes(), xst = x.strides(), os = out.sizes(), ost = out.strides();
  const int64_t xo = x.offset(), oo = out.offset();
  node->backward_fn = [=](Node&, const TensorList& g) -> TensorList {
    // Scatter g onto the storage span shared by both geometries, then read x's elements.
    const int64_t base = std::min(xo, oo);
    const int64_t span = std::max(extent_end(xs, xst, xo), extent_end(os, ost, oo)) - base;
    Tensor out_idx = storage_offsets(os, ost, oo, base, g[0].device());
    Tensor x_idx = storage_offsets(xs, xst, xo, base, g[0].device());
    Tensor flat = zeros({span}, opts(g[0].dtype(), g[0].device()));
    flat = index_add(flat, 0, out_idx, reshape(g[0], {-1}));
    return {reshape(index_select(flat, 0, x_idx), xs)};
  };
}

void identity(const char* name, const Tensor& x, const Tensor& out) {
  auto node = record(name, {x}, {out});
  if (!node) return;
  node->backward_fn = [](Node&, const TensorList& g) -> TensorList { return {g[0]}; };
}

void to_dtype(const Tensor& x, const Tensor& out) {
  auto node = record("ToDtypeBackward", {x}, {out});
  if (!node) return;
  const DType t = x.dtype();
  node->backward_fn = [t](Node&, const TensorList& g) -> TensorList { return {to_dtype(g[0], t)}; };
}

void pad_into(const Tensor& x, const Tensor& out, const Dims& offsets) {
  auto node = record("PadIntoBackward", {x}, {out});
  if (!node) return;
  const Dims shape = x.sizes();
  node->backward_fn = [=](Node&, const TensorList& g) -> TensorList {
    Tensor r = g[0];
    for (int d = 0; d < shape.size(); ++d) r = narrow(r, d, offsets[d], shape[d]);
    return {r};
  };
}

}  // namespace engine::autograd::formulas
