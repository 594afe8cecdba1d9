// PyTorch parity of matmul, bmm, linear, conv2d, conv_transpose2d and conv2d_weight: forward,
// first gradients and double backward against tests/parity/ref_conv.py (same case names, same
// parameters). Note [conv as three differentiable primitives] (ops.h) is what the double
// backward cases check. Scheme and tolerances: tests/parity/parity.h and docs/testing.md.
#include "tests/parity/parity.h"

using namespace engine;
using parity::CaseFn;

namespace {

parity::Reference& ref() {
  static parity::Reference r("ref_conv.py");
  return r;
}

CaseFn mm() {
  return [](const TensorList& x) { return TensorList{matmul(x[0], x[1])}; };
}

Conv2dParams params(int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh = 1, int64_t dw = 1, int64_t g = 1) {
  return Conv2dParams{sh, sw, ph, pw, dh, dw, g};
}

// Optional third input: the bias.
Tensor bias_of(const TensorList& x) { return x.size() > 2 ? x[2] : Tensor(); }

}  // namespace

TEST_CASE("parity conv: matmul (NumPy semantics) and bmm") {
  ref().run("matmul.2d", mm());
  ref().run("matmul.batched_bcast", mm());
  ref().run("matmul.vec_mat", mm());
  ref().run("matmul.mat_vec", mm());
  ref().run("matmul.vec_vec", mm());
  ref().run("matmul.batch_vec", mm());
  ref().run("matmul.transposed", [](const TensorList& x) { return TensorList{matmul(transpose(x[0], 0, 1), x[1])}; });
  ref().run("matmul.large_k", mm());
  ref().run("matmul.f64", mm());
  ref().run("bmm", [](const TensorList& x) { return TensorList{bmm(x[0], x[1])}; });
  ref().run("bmm.f64", [](const TensorList& x) { return TensorList{bmm(x[0], x[1])}; });
}

TEST_CASE("parity conv: linear") {
  auto lin = [](const TensorList& x) { return TensorList{linear(x[0], x[1], bias_of(x))}; };
  ref().run("linear.bias", lin);
  ref().run("linear.nobias", lin);
  ref().run("linear.3d", lin);
  ref().run("linear.f64", lin);
}

TEST_CASE("parity conv: conv2d") {
  auto conv = [](Conv2dParams p) {
    return [p](const TensorList& x) { return TensorList{conv2d(x[0], x[1], bias_of(x), p)}; };
  };
  ref().run("conv2d.pad1", conv(Conv2dParams::make(1, 1)));
  ref().run("conv2d.stride2", conv(Conv2dParams::make(2, 0)));
  ref().run("conv2d.dilation2", conv(Conv2dParams::make(1, 2, 2)));
  ref().run("conv2d.groups2", conv(Conv2dParams::make(1, 1, 1, 2)));
  ref().run("conv2d.asym", conv(params(2, 1, 0, 1)));
  ref().run("conv2d.1x1", conv(Conv2dParams::make(1, 0)));
  ref().run("conv2d.batch_grouped", conv(Conv2dParams::make(1, 1, 1, 2)));
  ref().run("conv2d.f64", conv(Conv2dParams::make(2, 1)));
  ref().run("conv2d.transposed_input", [](const TensorList& x) {
    return TensorList{conv2d(transpose(x[0], 2, 3), x[1], Tensor(), Conv2dParams::make(1, 1))};
  });
}

TEST_CASE("parity conv: conv_transpose2d") {
  auto convt = [](Conv2dParams p, int64_t op) {
    return [p, op](const TensorList& x) { return TensorList{conv_transpose2d(x[0], x[1], bias_of(x), p, op, op)}; };
  };
  ref().run("conv_transpose2d.stride2", convt(Conv2dParams::make(2, 1), 1));
  ref().run("conv_transpose2d.plain", convt(Conv2dParams::make(1, 0), 0));
  ref().run("conv_transpose2d.groups2", convt(Conv2dParams::make(1, 1, 1, 2), 0));
  ref().run("conv_transpose2d.dilation", convt(Conv2dParams::make(2, 2, 2), 1));
  ref().run("conv_transpose2d.f64", convt(Conv2dParams::make(2, 0), 1));
}

TEST_CASE("parity conv: conv2d_weight") {
  auto cw = [](int64_t kh, int64_t kw, Conv2dParams p) {
    return [kh, kw, p](const TensorList& x) { return TensorList{conv2d_weight(x[0], x[1], kh, kw, p)}; };
  };
  ref().run("conv2d_weight.pad1", cw(3, 3, Conv2dParams::make(1, 1)));
  ref().run("conv2d_weight.stride2", cw(3, 3, Conv2dParams::make(2, 0)));
  ref().run("conv2d_weight.groups2", cw(3, 3, Conv2dParams::make(1, 1, 1, 2)));
  ref().run("conv2d_weight.dilation2", cw(3, 3, Conv2dParams::make(1, 2, 2)));
  ref().run("conv2d_weight.f64", cw(2, 3, Conv2dParams::make(1, 0)));
}

TEST_CASE("parity conv: every reference case was compared") { ref().check_all_run(); }
