// elementwise.cpp: backward formulas of the elementwise family, written with differentiable ops
// so that they can themselves be differentiated (double backward). Broadcasting is undone with
// sum_to (the gradient of an expanded operand is summed over the expanded dims).
//
//   add:  da = g,        db = g
//   sub:  da = g,        db = -g
//   mul:  da = g b,      db = g a
//   div:  da = g / b,    db = -g a / b^2
//   s/x:  dx = -g out / x
//   exp:  dx = g out     (out saved: Note [saved outputs])
//   log:  dx = g / x
#include "autograd/formulas/elementwise.h"

#include "autograd/node.h"
#include "tensor/ops.h"

namespace engine::autograd::formulas {

void add(const Tensor& a, const Tensor& b, const Tensor& out) {
  auto node = record("AddBackward", {a, b}, {out});
  if (!node) return;
  const Dims sa = a.sizes(), sb = b.sizes();
  node->backward_fn = [sa, sb](Node& n, const TensorList& g) -> TensorList {
    return {n.needs_input_grad(0) ? sum_to(g[0], sa) : Tensor(), n.needs_input_grad(1) ? sum_to(g[0], sb) : Tensor()};
  };
}

void sub(const Tensor& a, const Tensor& b, const Tensor& out) {
  auto node = record("SubBackward", {a, b}, {out});
  if (!node) return;
  const Dims sa = a.sizes(), sb = b.sizes();
  node->backward_fn = [sa, sb](Node& n, const TensorList& g) -> TensorList {
    return {n.needs_input_grad(0) ? sum_to(g[0], sa) : Tensor(),
            n.needs_input_grad(1) ? neg(sum_to(g[0], sb)) : Tensor()};
  };
}

void mul(const Tensor& a, const Tensor& b, const Tensor& out) {
  auto node = record("MulBackward", {a, b}, {out});
  if (!node) return;
  // Save only what the other input's gradient needs.
  node->save(node->needs_input_grad(1) ? a : Tensor());
  node->save(node->needs_input_grad(0) ? b : Tensor());
  const Dims sa = a.sizes(), sb = b.sizes();
  node->backward_fn = [sa, sb](Node& n, const TensorList& g) -> TensorList {
    Tensor da, db;
    if (n.needs_input_grad(0)) da = sum_to(mul(g[0], n.saved(1)), sa);
    if (n.needs_input_grad(1)) db = sum_to(mul(g[0], n.saved(0)), sb);
    return {da, db};
  };
}

void div(const Tensor& a, const Tensor& b, const Tensor& out) {
  auto node = record("DivBackward", {a, b}, {out});
  if (!node) return;
  node->save(node->needs_input_grad(1) ? a : Tensor());
  node->save(b);
  const Dims sa = a.sizes(), sb = b.sizes();
  node->backward_fn = [sa, sb](Node& n, const TensorList& g) -> TensorList {
    Tensor b = n.saved(1);
    Tensor da, db;
    if (n.needs_input_grad(0)) da = sum_to(div(g[0], b), sa);
    if (n.needs_input_grad(1)) db = sum_to(neg(div(mul(g[0], n.saved(0)), mul(b, b))), sb);
    return {da, db};
  };
}

void add_scalar(const Tensor& x, const Tensor& out) {
  auto node = record("AddScalarBackward", {x}, {out});
  if (!node) return;
  node->backward_fn = [](Node&, const TensorList& g) -> TensorList { return {g[0]}; };
}

void mul_scalar(const Tensor& x, const Tensor& out, double s) {
  auto node = record("MulScalarBackward", {x}, {out});
  if (!node) return;
  node->backward_fn = [s](Node&, const TensorList& g) -> TensorList { return {mul(g[0], s)}; };
}

void rdiv_scalar(const Tensor& x, const Tensor& out) {
  auto node = record("RDivScalarBackward", {x}, {out});
  if (!node) return;
  node->save(x);
  node->save(out);
  node->backward_fn = [](Node& n, const TensorList& g) -> TensorList {
    return {neg(div(mul(g[0], n.saved(1)), n.saved(0)))};
  };
}

void neg(const Tensor& x, const Tensor& out) {
  auto node = record("NegBackward", {x}, {out});
  if (!node) return;
  node->backward_fn = [](Node&, const TensorList& g) -> TensorList { return {engine::neg(g[0])}; };
}

void exp(const Tensor& x, const Tensor& out) {
  auto node = record("ExpBackward", {x}, {out});
  if (!node) return;
  node->save(out);
  node->backward_fn = [](Node& n, const TensorList& g) -> TensorList { return {engine::mul(g[0], n.saved(0))}; };
}

void log(const Tensor& x, const Tensor& out) {
  auto node = record("LogBackward", {x}, {out});
  if (!node) return;
  node->save(x);
  node->backward_fn = [](Node& n, const TensorList& g) -> TensorList { return {engine::div(g[0], n.saved(0))}; };
}

}  // namespace engine::autograd::formulas
