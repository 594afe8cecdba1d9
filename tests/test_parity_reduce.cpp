// PyTorch parity of reductions, softmax, log_softmax, cross_entropy, layer_norm and group_norm:
// forward, first gradients and double backward against tests/parity/ref_reduce.py (same case
// names, same compositions). Scheme and tolerances: tests/parity/parity.h and docs/testing.md.
#include "tests/parity/parity.h"

using namespace engine;
using parity::CaseFn;
using parity::CaseOptions;

namespace {

parity::Reference& ref() {
  static parity::Reference r("ref_reduce.py");
  return r;
}

template <typename F>
CaseFn unary(F f) {
  return [f](const TensorList& x) { return TensorList{f(x[0])}; };
}

const CaseOptions forward_only{std::nullopt, std::nullopt, false};

}  // namespace

TEST_CASE("parity reduce: sum and mean") {
  for (const char* sfx : {"f32", "f64"}) {
    const std::string s = sfx;
    ref().run("sum.all." + s, unary([](const Tensor& x) { return sum(x); }));
    ref().run("sum.dim1." + s, unary([](const Tensor& x) { return sum(x, {1}); }));
    ref().run("mean.all." + s, unary([](const Tensor& x) { return mean(x); }));
    ref().run("mean.dims12_keep." + s, unary([](const Tensor& x) { return mean(x, {1, 2}, true); }));
  }
  ref().run("sum.dims02_keep", unary([](const Tensor& x) { return sum(x, {0, 2}, true); }));
  ref().run("sum.neg_dim", unary([](const Tensor& x) { return sum(x, {-1}); }));
  ref().run("sum.transposed", unary([](const Tensor& x) { return sum(transpose(x, 0, 1), {0}); }));
  ref().run("sum.large", unary([](const Tensor& x) { return sum(x, {1}); }));
  ref().run("mean.dim0", unary([](const Tensor& x) { return mean(x, {0}); }));
}

TEST_CASE("parity reduce: amax and amin (ties share the gradient)") {
  ref().run("amax.dim1", unary([](const Tensor& x) { return amax(x, {1}); }));
  ref().run("amax.all", unary([](const Tensor& x) { return amax(x, {0, 1, 2}); }));
  ref().run("amax.ties", unary([](const Tensor& x) { return amax(x, {1}, true); }));
  ref().run("amin.dim0", unary([](const Tensor& x) { return amin(x, {0}); }));
  ref().run("amin.ties", unary([](const Tensor& x) { return amin(x, {0, 1}); }));
  ref().run("amax.f64", unary([](const Tensor& x) { return amax(x, {-1}); }));
}

TEST_CASE("parity reduce: logsumexp, var, argmax") {
  ref().run("logsumexp.dim1", unary([](const Tensor& x) { return logsumexp(x, {1}); }));
  ref().run("logsumexp.keep", unary([](const Tensor& x) { return logsumexp(x, {1, 2}, true); }));
  ref().run("logsumexp.large", unary([](const Tensor& x) { return logsumexp(x, {1}); }));
  ref().run("logsumexp.f64", unary([](const Tensor& x) { return logsumexp(x, {0}); }));
  ref().run("var.dim1", unary([](const Tensor& x) { return var(x, {1}, 1); }));
  ref().run("var.all_c0", unary([](const Tensor& x) { return var(x, {}, 0); }));
  ref().run("var.keep", unary([](const Tensor& x) { return var(x, {0, 2}, 1, true); }));
  ref().run("var.f64", unary([](const Tensor& x) { return var(x, {1}, 0); }));
  ref().run("argmax.dim1", unary([](const Tensor& x) { return argmax(x, 1); }), forward_only);
  ref().run("argmax.keep", unary([](const Tensor& x) { return argmax(x, -1, true); }), forward_only);
}

TEST_CASE("parity reduce: softmax and log_softmax") {
  for (const char* sfx : {"f32", "f64"}) {
    const std::string s = sfx;
    ref().run("softmax.last." + s, unary([](const Tensor& x) { return softmax(x, -1); }));
    ref().run("log_softmax.last." + s, unary([](const Tensor& x) { return log_softmax(x, -1); }));
  }
  ref().run("softmax.dim1", unary([](const Tensor& x) { return softmax(x, 1); }));
  ref().run("softmax.large", unary([](const Tensor& x) { return softmax(x, -1); }));
  ref().run("softmax.transposed", unary([](const Tensor& x) { return softmax(transpose(x, 0, 1), -1); }));
  ref().run("log_softmax.dim0", unary([](const Tensor& x) { return log_softmax(x, 0); }));
}

TEST_CASE("parity reduce: cross_entropy") {
  auto ce = [](const TensorList& x) { return TensorList{cross_entropy(x[0], x[1])}; };
  ref().run("cross_entropy", ce);
  ref().run("cross_entropy.f64", ce);
}

TEST_CASE("parity reduce: layer_norm") {
  ref().run("layer_norm.affine", [](const TensorList& x) { return TensorList{layer_norm(x[0], {6}, x[1], x[2])}; });
  ref().run("layer_norm.2d", [](const TensorList& x) { return TensorList{layer_norm(x[0], {3, 4}, x[1], x[2])}; });
  ref().run("layer_norm.plain", [](const TensorList& x) { return TensorList{layer_norm(x[0], {5})}; });
  ref().run("layer_norm.weight_only", [](const TensorList& x) { return TensorList{layer_norm(x[0], {5}, x[1])}; });
  ref().run("layer_norm.eps",
            [](const TensorList& x) { return TensorList{layer_norm(x[0], {4}, x[1], x[2], 1e-2)}; });
  ref().run("layer_norm.f64", [](const TensorList& x) { return TensorList{layer_norm(x[0], {6}, x[1], x[2])}; });
}

TEST_CASE("parity reduce: group_norm") {
  ref().run("group_norm.affine", [](const TensorList& x) { return TensorList{group_norm(x[0], 3, x[1], x[2])}; });
  ref().run("group_norm.plain", [](const TensorList& x) { return TensorList{group_norm(x[0], 2)}; });
  ref().run("group_norm.g1", [](const TensorList& x) { return TensorList{group_norm(x[0], 1, x[1], x[2])}; });
  ref().run("group_norm.per_channel",
            [](const TensorList& x) { return TensorList{group_norm(x[0], 4, x[1], x[2])}; });
  ref().run("group_norm.f64", [](const TensorList& x) { return TensorList{group_norm(x[0], 2, x[1], x[2])}; });
}

TEST_CASE("parity reduce: every reference case was compared") { ref().check_all_run(); }
