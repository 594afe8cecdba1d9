// elementwise.cpp: backward formulas of the elementwise family, written with differentiable ops
// so that they can themselves be differentiated (double backward). Broadcasting is undone with
// sum_to (the gradient of an expanded operand is summed over the expanded dims). g is the incoming
// gradient, out the op's (saved) output.
//
//   add:        da = g,            db = g
//   sub:        da = g,            db = -g
//   mul:        da = g b,          db = g a
//   div:        da = g / b,        db = -g a / b^2
//   s/x:        dx = -g out / x
//   exp:        dx = g out                     (out saved: Note [saved outputs])
//   log:        dx = g / x
//   pow(x, e):  dx = g e x^(e-1);  e = 0: g * 0;  e = 1: g;  e = 2, 1/2, -1/2: as square, sqrt, rsqrt
//   where:      da = where(c, g, 0),  db = where(c, 0, g)
//   maximum:    da = g * [a > b] + g/2 * [a == b],  db likewise with a, b swapped (PyTorch's split)
//   minimum:    da = g * [a < b] + g/2 * [a == b],  db likewise
// Fused, one kernel each (Note [fused pointwise backward] in elementwise.h), dx = g * f'(y):
//   relu:       f' = [x > 0]                   f'' = 0
//   leaky_relu: f' = gain * (x > 0 ? 1 : slope)   (PyTorch: x == 0 takes the slope side)   f'' = 0
//   clamp:      f' = [lo <= x <= hi]           f'' = 0
//   abs:        f' = sign(x)  (0 at 0)         f'' = 0
//   square:     f' = 2x                        f'' = 2
//   sin:        f' = cos x                     f'' = -sin x
//   cos:        f' = -sin x                    f'' = -cos x
//   erf:        f' = 2/sqrt(pi) exp(-x^2)      f'' = -2x f'
//   gelu:       f' = Phi(x) + x phi(x)         f'' = phi(x) (2 - x^2)
//   gelu_tanh:  f' = (1+t)/2 + x/2 (1-t^2) u'  f'' = (1-t^2) (u' + x/2 (u'' - 2 t u'^2))
//               with u = k (x + c x^3), u' = k (1 + 3c x^2), u'' = 6 k c x, t = tanh u
//   softplus:   f' = sigmoid(x), 1 if x > 20   f'' = s (1 - s), 0 if x > 20
//   and in terms of the output y (the derivative of f' is taken with respect to y):
//   sqrt:       f' = 1 / (2y)                  d/dy = -1 / (2y^2)
//   rsqrt:      f' = -y^3 / 2                  d/dy = -3y^2 / 2
//   sigmoid:    f' = y (1 - y)                 d/dy = 1 - 2y
//   tanh:       f' = 1 - y^2                   d/dy = -2y
// The backward primitives themselves:
//   pointwise_backward(g, y):  dg = pointwise_backward(gg, y),  dy = gg g f''(y)
//   maxmin_backward(g, a, b):  dg = maxmin_backward(gg, a, b)   (a, b only select)
#include "autograd/formulas/elementwise.h"

#include "autograd/node.h"
#include "tensor/kernels/elementwise.h"
#include "tensor/ops.h"

namespace engine {

namespace {

struct KindInfo {
  const char* op;         // the primitive's op name (profiler)
  const char* node;       // Node of the forward op
  const char* node2;      // Node of the primitive (double backward)
  bool y_is_output;       // y = out instead of x
  bool piecewise_linear;  // f'' = 0: the primitive is differentiable in g only
};

// Indexed by PointwiseGrad; the static_assert below keeps the two in step.
constexpr KindInfo kKinds[] = {
    {"relu_backward", "ReluBackward", "ReluBackwardBackward", false, true},
    {"leaky_relu_backward", "LeakyReluBackward", "LeakyReluBackwardBackward", false, true},
    {"clamp_backward", "ClampBackward", "ClampBackwardBackward", false, true},
    {"abs_backward", "AbsBackward", "AbsBackwardBackward", false, true},
    {"square_backward", "SquareBackward", "SquareBackwardBackward", false, false},
    {"sin_backward", "SinBackward", "SinBackwardBackward", false, false},
    {"cos_backward", "CosBackward", "CosBackwardBackward", false, false},
    {"erf_backward", "ErfBackward", "ErfBackwardBackward", false, false},
    {"gelu_backward", "GeluBackward", "GeluBackwardBackward", false, false},
    {"gelu_tanh_backward", "GeluTanhBackward", "GeluTanhBackwardBackward", false, false},
    {"softplus_backward", "SoftplusBackward", "SoftplusBackwardBackward", false, false},
    {"sqrt_backward", "SqrtBackward", "SqrtBackwardBackward", true, false},
    {"rsqrt_backward", "RsqrtBackward", "RsqrtBackwardBackward", true, false},
    {"sigmoid_backward", "SigmoidBackward", "SigmoidBackwardBackward", true, false},
    {"tanh_backward", "TanhBackward", "TanhBackwardBackward", true, false},
};
static_assert(sizeof(kKinds) / sizeof(kKinds[0]) == size_t(PointwiseGrad::tanh) + 1,
              "kKinds must list every PointwiseGrad in order");

const KindInfo& info(PointwiseGrad kind) { return kKinds[size_t(kind)]; }

// gg * g * f''(y) for the kinds that are not piecewise linear (table in the header comment).
Tensor grad_wrt_y(PointwiseGrad kind, const Tensor& gg, const Tensor& g, const Tensor& y) {
  namespace K = kernels;
  const Tensor h = mul(gg, g);
  switch (kind) {
    case PointwiseGrad::square: return mul(h, 2.0);
    case PointwiseGrad::sin: return neg(mul(h, sin(y)));
    case PointwiseGrad::cos: return neg(mul(h, cos(y)));
    case PointwiseGrad::erf: return mul(h, mul(mul(exp(neg(square(y))), y), -2.0 * K::kTwoOverSqrtPi));
    case PointwiseGrad::gelu: {
      const Tensor y2 = square(y);
      const Tensor phi = mul(exp(mul(y2, -0.5)), K::kInvSqrt2Pi);
      return mul(h, mul(phi, rsub(2.0, y2)));
    }
    case PointwiseGrad::gelu_tanh: {
      const double k = K::kSqrt2OverPi, c = K::kGeluKappa;
      const Tensor y2 = square(y);
      const Tensor t = tanh(mul(add(y, mul(mul(y2, y), c)), k));
      const Tensor du = mul(add(mul(y2, 3.0 * c), 1.0), k);
      const Tensor ddu = mul(y, 6.0 * k * c);
      const Tensor bracket = add(du, mul(mul(y, 0.5), sub(ddu, mul(mul(t, square(du)), 2.0))));
      return mul(h, mul(rsub(1.0, square(t)), bracket));
    }
    case PointwiseGrad::softplus: {
      const Tensor s = sigmoid(y);
      const Tensor zero = scalar_tensor(0.0, opts(y.dtype(), y.device()));
      return mul(h, where(gt(y, K::kSoftplusThreshold), zero, mul(s, rsub(1.0, s))));
    }
    case PointwiseGrad::sqrt: return neg(div(h, mul(square(y), 2.0)));
    case PointwiseGrad::rsqrt: return mul(h, mul(square(y), -1.5));
    case PointwiseGrad::sigmoid: return mul(h, rsub(1.0, mul(y, 2.0)));
    case PointwiseGrad::tanh: return mul(h, mul(y, -2.0));
    default: break;
  }
  throw Error(fmt::format("{}: no second derivative (piecewise linear)", info(kind).op));
}

}  // namespace

const char* pointwise_grad_name(PointwiseGrad kind) { return info(kind).op; }

}  // namespace engine

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
            n.needs_input_grad(1) ? engine::neg(sum_to(g[0], sb)) : Tensor()};
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
    if (n.needs_input_grad(0)) da = sum_to(engine::mul(g[0], n.saved(1)), sa);
    if (n.needs_input_grad(1)) db = sum_to(engine::mul(g[0], n.saved(0)), sb);
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
    if (n.needs_input_grad(0)) da = sum_to(engine::div(g[0], b), sa);
    if (n.needs_input_grad(1))
      db = sum_to(engine::neg(engine::div(engine::mul(g[0], n.saved(0)), engine::mul(b, b))), sb);
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
  node->backward_fn = [s](Node&, const TensorList& g) -> TensorList { return {engine::mul(g[0], s)}; };
}

void rdiv_scalar(const Tensor& x, const Tensor& out) {
  auto node = record("RDivScalarBackward", {x}, {out});
  if (!node) return;
  node->save(x);
  node->save(out);
  node->backward_fn = [](Node& n, const TensorList& g) -> TensorList {
    return {engine::neg(engine::div(engine::mul(g[0], n.saved(1)), n.saved(0)))};
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

void pow_scalar(const Tensor& x, const Tensor& out, double e) {
  auto node = record("PowBackward", {x}, {out});
  if (!node) return;
  // The exponents that the forward computes exactly reuse the fused formulas.
  const bool from_output = e == 0.5 || e == -0.5;
  node->save(e == 0 || e == 1 ? Tensor() : from_output ? out : x);
  node->backward_fn = [e](Node& n, const TensorList& g) -> TensorList {
    // x^0 = 1: zero gradient, as g * 0 so that it stays a function of g (gradgradcheck, and PyTorch
    // gives NaN for a NaN g too).
    if (e == 0) return {engine::mul(g[0], 0.0)};
    if (e == 1) return {g[0]};
    const Tensor y = n.saved(0);
    if (e == 2) return {engine::pointwise_backward(PointwiseGrad::square, g[0], y)};
    if (e == 0.5) return {engine::pointwise_backward(PointwiseGrad::sqrt, g[0], y)};
    if (e == -0.5) return {engine::pointwise_backward(PointwiseGrad::rsqrt, g[0], y)};
    return {engine::mul(g[0], engine::mul(engine::pow(y, e - 1.0), e))};
  };
}

void pointwise(PointwiseGrad kind, const Tensor& x, const Tensor& out, double p0, double p1) {
  const KindInfo& ki = info(kind);
  auto node = record(ki.node, {x}, {out});
  if (!node) return;
  node->save(ki.y_is_output ? out : x);
  node->backward_fn = [kind, p0, p1](Node& n, const TensorList& g) -> TensorList {
    return {engine::pointwise_backward(kind, g[0], n.saved(0), p0, p1)};
  };
}

void pointwise_backward(PointwiseGrad kind, const Tensor& g, const Tensor& y, const Tensor& out, double p0,
                        double p1) {
  const KindInfo& ki = info(kind);
  // Piecewise-linear kinds are constant in y (almost everywhere): no edge to y at all.
  const bool linear = ki.piecewise_linear;
  auto node = linear ? record(ki.node2, {g}, {out}) : record(ki.node2, {g, y}, {out});
  if (!node) return;
  node->save(y);
  node->save(!linear && node->needs_input_grad(1) ? g : Tensor());
  const Dims sg = g.sizes(), sy = y.sizes();
  node->backward_fn = [kind, p0, p1, linear, sg, sy](Node& n, const TensorList& gg) -> TensorList {
    const Tensor y = n.saved(0);
    TensorList r;
    r.push_back(n.needs_input_grad(0) ? sum_to(engine::pointwise_backward(kind, gg[0], y, p0, p1), sg) : Tensor());
    if (!linear) r.push_back(n.needs_input_grad(1) ? sum_to(grad_wrt_y(kind, gg[0], n.saved(1), y), sy) : Tensor());
    return r;
  };
}

void where(const Tensor& condition, const Tensor& a, const Tensor& b, const Tensor& out) {
  auto node = record("WhereBackward", {a, b}, {out});
  if (!node) return;
  node->save(condition);
  const Dims sa = a.sizes(), sb = b.sizes();
  node->backward_fn = [sa, sb](Node& n, const TensorList& g) -> TensorList {
    const Tensor c = n.saved(0);
    const Tensor zero = scalar_tensor(0.0, opts(g[0].dtype(), g[0].device()));
    Tensor da, db;
    if (n.needs_input_grad(0)) da = sum_to(engine::where(c, g[0], zero), sa);
    if (n.needs_input_grad(1)) db = sum_to(engine::where(c, zero, g[0]), sb);
    return {da, db};
  };
}

namespace {
void record_maxmin(const char* name, bool is_min, const Tensor& a, const Tensor& b, const Tensor& out) {
  auto node = record(name, {a, b}, {out});
  if (!node) return;
  node->save(a, SaveMode::exact);
  node->save(b, SaveMode::exact);
  const Dims sa = a.sizes(), sb = b.sizes();
  node->backward_fn = [sa, sb, is_min](Node& n, const TensorList& g) -> TensorList {
    const Tensor a = n.saved(0), b = n.saved(1);
    Tensor da, db;
    if (n.needs_input_grad(0)) da = sum_to(engine::maxmin_backward(g[0], a, b, is_min), sa);
    if (n.needs_input_grad(1)) db = sum_to(engine::maxmin_backward(g[0], b, a, is_min), sb);
    return {da, db};
  };
}
}  // namespace

void maximum(const Tensor& a, const Tensor& b, const Tensor& out) { record_maxmin("MaximumBackward", false, a, b, out); }
void minimum(const Tensor& a, const Tensor& b, const Tensor& out) { record_maxmin("MinimumBackward", true, a, b, out); }

void maxmin_backward(const Tensor& g, const Tensor& a, const Tensor& b, bool is_min, const Tensor& out) {
  auto node = record(is_min ? "MinimumBackwardBackward" : "MaximumBackwardBackward", {g}, {out});
  if (!node) return;
  node->save(a, SaveMode::exact);
  node->save(b, SaveMode::exact);
  const Dims sg = g.sizes();
  node->backward_fn = [is_min, sg](Node& n, const TensorList& gg) -> TensorList {
    return {sum_to(engine::maxmin_backward(gg[0], n.saved(0), n.saved(1), is_min), sg)};
  };
}

}  // namespace engine::autograd::formulas
