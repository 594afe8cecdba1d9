// PyTorch parity of the elementwise family (tensor/ops_elementwise.cpp): forward, first gradients
// and double backward of every op against tests/parity/ref_elementwise.py (same case names, same
// compositions). Scheme and tolerances: tests/parity/parity.h and docs/testing.md.
#include <cmath>

#include "tests/parity/parity.h"

using namespace engine;
using parity::CaseFn;
using parity::CaseOptions;

namespace {

parity::Reference& ref() {
  static parity::Reference r("ref_elementwise.py");
  return r;
}

template <typename F>
CaseFn unary(F f) {
  return [f](const TensorList& x) { return TensorList{f(x[0])}; };
}
template <typename F>
CaseFn binary(F f) {
  return [f](const TensorList& x) { return TensorList{f(x[0], x[1])}; };
}

const CaseOptions forward_only{std::nullopt, std::nullopt, false};

}  // namespace

TEST_CASE("parity elementwise: binary ops with broadcasting, f32 and f64") {
  for (const char* sfx : {"f32", "f64"}) {
    const std::string s = sfx;
    ref().run("add." + s, binary([](const Tensor& a, const Tensor& b) { return add(a, b); }));
    ref().run("add.bcast." + s, binary([](const Tensor& a, const Tensor& b) { return add(a, b); }));
    ref().run("sub.bcast." + s, binary([](const Tensor& a, const Tensor& b) { return sub(a, b); }));
    ref().run("mul.bcast." + s, binary([](const Tensor& a, const Tensor& b) { return mul(a, b); }));
    ref().run("div.bcast." + s, binary([](const Tensor& a, const Tensor& b) { return div(a, b); }));
  }
  ref().run("div.scalar_tensor", binary([](const Tensor& a, const Tensor& b) { return div(a, b); }));
}

TEST_CASE("parity elementwise: non-contiguous operands") {
  ref().run("mul.transposed", binary([](const Tensor& a, const Tensor& b) { return mul(transpose(a, 0, 1), b); }));
  ref().run("add.sliced", binary([](const Tensor& a, const Tensor& b) { return add(slice(a, 1, 0, 8, 2), b); }));
  ref().run("exp.transposed", unary([](const Tensor& x) { return exp(transpose(x, 0, 1)); }));
  ref().run("lrelu.sliced",
            unary([](const Tensor& x) { return leaky_relu(slice(x, 1, 1, 8, 2), 0.2, std::sqrt(2.0)); }));
}

TEST_CASE("parity elementwise: tensor-scalar ops") {
  ref().run("add_scalar", unary([](const Tensor& a) { return add(a, 2.5); }));
  ref().run("sub_scalar", unary([](const Tensor& a) { return sub(a, 1.25); }));
  ref().run("rsub_scalar", unary([](const Tensor& a) { return rsub(3.0, a); }));
  ref().run("mul_scalar", unary([](const Tensor& a) { return mul(a, -1.5); }));
  ref().run("div_scalar", unary([](const Tensor& a) { return div(a, 4.0); }));
  ref().run("rdiv_scalar", unary([](const Tensor& a) { return rdiv(2.0, a); }));
}

TEST_CASE("parity elementwise: unary ops, f32 and f64") {
  for (const char* sfx : {"f32", "f64"}) {
    const std::string s = sfx;
    ref().run("neg." + s, unary([](const Tensor& x) { return neg(x); }));
    ref().run("exp." + s, unary([](const Tensor& x) { return exp(x); }));
    ref().run("log." + s, unary([](const Tensor& x) { return log(x); }));
    ref().run("sqrt." + s, unary([](const Tensor& x) { return sqrt(x); }));
    ref().run("rsqrt." + s, unary([](const Tensor& x) { return rsqrt(x); }));
    ref().run("pow2.5." + s, unary([](const Tensor& x) { return pow(x, 2.5); }));
    ref().run("square." + s, unary([](const Tensor& x) { return square(x); }));
    ref().run("sigmoid." + s, unary([](const Tensor& x) { return sigmoid(x); }));
    ref().run("tanh." + s, unary([](const Tensor& x) { return tanh(x); }));
    ref().run("gelu." + s, unary([](const Tensor& x) { return gelu(x); }));
    ref().run("lrelu." + s, unary([](const Tensor& x) { return leaky_relu(x, 0.2, std::sqrt(2.0)); }));
  }
  ref().run("pow3", unary([](const Tensor& x) { return pow(x, 3.0); }));
  ref().run("pow-1.5", unary([](const Tensor& x) { return pow(x, -1.5); }));
  ref().run("pow0.5", unary([](const Tensor& x) { return pow(x, 0.5); }));
  ref().run("abs", unary([](const Tensor& x) { return abs(x); }));
  ref().run("sign", unary([](const Tensor& x) { return sign(x); }), forward_only);
  ref().run("sin", unary([](const Tensor& x) { return sin(x); }));
  ref().run("cos", unary([](const Tensor& x) { return cos(x); }));
  ref().run("erf", unary([](const Tensor& x) { return erf(x); }));
  ref().run("gelu_tanh", unary([](const Tensor& x) { return gelu(x, GeluApprox::tanh); }));
  ref().run("gelu_tanh.f64", unary([](const Tensor& x) { return gelu(x, GeluApprox::tanh); }));
  ref().run("lrelu_default", unary([](const Tensor& x) { return leaky_relu(x); }));
  ref().run("relu", unary([](const Tensor& x) { return relu(x); }));
  ref().run("softplus", unary([](const Tensor& x) { return softplus(x); }));
  ref().run("softplus.f64", unary([](const Tensor& x) { return softplus(x); }));
}

TEST_CASE("parity elementwise: where, clamp, maximum and minimum (ties split the gradient)") {
  auto where3 = [](const TensorList& x) { return TensorList{where(x[0], x[1], x[2])}; };
  ref().run("where", where3);
  ref().run("where.bcast", where3);
  ref().run("clamp", unary([](const Tensor& x) { return clamp(x, -0.5, 0.7); }));
  ref().run("clamp_min", unary([](const Tensor& x) { return clamp(x, -0.5, std::nullopt); }));
  ref().run("clamp_max", unary([](const Tensor& x) { return clamp(x, std::nullopt, 0.7); }));
  ref().run("maximum.ties", binary([](const Tensor& a, const Tensor& b) { return maximum(a, b); }));
  ref().run("minimum.ties", binary([](const Tensor& a, const Tensor& b) { return minimum(a, b); }));
  ref().run("maximum.bcast", binary([](const Tensor& a, const Tensor& b) { return maximum(a, b); }));
  ref().run("minimum.bcast.f64", binary([](const Tensor& a, const Tensor& b) { return minimum(a, b); }));
}

TEST_CASE("parity elementwise: comparisons give the same booleans") {
  ref().run("eq", binary([](const Tensor& a, const Tensor& b) { return eq(a, b); }), forward_only);
  ref().run("ne", binary([](const Tensor& a, const Tensor& b) { return ne(a, b); }), forward_only);
  ref().run("lt", binary([](const Tensor& a, const Tensor& b) { return lt(a, b); }), forward_only);
  ref().run("le", binary([](const Tensor& a, const Tensor& b) { return le(a, b); }), forward_only);
  ref().run("gt", binary([](const Tensor& a, const Tensor& b) { return gt(a, b); }), forward_only);
  ref().run("ge", binary([](const Tensor& a, const Tensor& b) { return ge(a, b); }), forward_only);
  ref().run("gt_scalar", unary([](const Tensor& a) { return gt(a, 0.0); }), forward_only);
  ref().run("lt_scalar", unary([](const Tensor& a) { return lt(a, 1.0); }), forward_only);
  ref().run("ge_scalar", unary([](const Tensor& a) { return ge(a, 0.0); }), forward_only);
  ref().run("le_scalar", unary([](const Tensor& a) { return le(a, 1.0); }), forward_only);
  ref().run("eq.bcast", binary([](const Tensor& a, const Tensor& b) { return eq(a, b); }), forward_only);
  ref().run("logical_not", unary([](const Tensor& a) { return logical_not(a); }), forward_only);
}

TEST_CASE("parity elementwise: every reference case was compared") { ref().check_all_run(); }
