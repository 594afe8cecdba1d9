// conv.cpp: backward formulas of the convolution family: Note [conv as three differentiable
// primitives] (tensor/ops.h). Each primitive's backward is made of the other two, so every
// formula is differentiable again, to any order (R1's double backward needs order two).
//
// All three are bilinear forms of the one trilinear quantity  B(x, w, y) = <conv2d(x, w), y>:
//   conv2d(x, w)            = dB/dy
//   conv_transpose2d(y, w)  = dB/dx   (the adjoint of conv2d in x)
//   conv2d_weight(x, y)     = dB/dw   (the adjoint of conv2d in w)
// so with an incoming gradient g of each output:
//   conv2d            out = conv2d(x, w) + b:
//     dx = conv_transpose2d(g, w, output_padding so that the size is x's)
//     dw = conv2d_weight(x, g)
//     db = sum(g, {0, 2, 3})
//   conv_transpose2d  out = conv_transpose2d(y, w) + b   (out has conv2d's input shape):
//     dy = conv2d(g, w)
//     dw = conv2d_weight(g, y)        (g plays conv2d's input, y its output gradient)
//     db = sum(g, {0, 2, 3})
//   conv2d_weight     out = conv2d_weight(x, gy)         (out has the weight's shape):
//     dx  = conv_transpose2d(gy, g, output_padding so that the size is x's)
//     dgy = conv2d(x, g)
//
// Precision (tensor/precision.h) and algorithm (tensor/conv_algorithm.h): each Node keeps the
// matmul precision and the conv algorithm in force when it was recorded and runs its backward
// convolutions under them; under bf16 the op recorded the Node on the bf16 copies of its inputs,
// which are therefore what it saves.
#include "autograd/formulas/conv.h"

#include "autograd/node.h"
#include "tensor/conv_algorithm.h"
#include "tensor/kernels/im2col.h"
#include "tensor/precision.h"

namespace engine::autograd::formulas {

namespace {

// The output_padding that makes conv_transpose2d map `out` positions back to `in` positions.
int64_t output_padding(int64_t in, int64_t out, int64_t k, int64_t s, int64_t p, int64_t d) {
  return in - kernels::conv_transpose_out_size(out, k, s, p, d, 0);
}

// The policies in force when a Node is recorded, reinstalled around its backward.
struct RecordedPolicy {
  MatmulPrecision precision = matmul_precision();
  ConvAlgorithm algorithm = conv_algorithm();
};
class RecordedPolicyScope {
 public:
  explicit RecordedPolicyScope(const RecordedPolicy& r) : precision_(r.precision), algorithm_(r.algorithm) {}

 private:
  MatmulPrecisionScope precision_;
  ConvAlgorithmScope algorithm_;
};

}  // namespace

void conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& out, const Conv2dParams& p) {
  auto node = record("Conv2dBackward", {x, weight, bias}, {out});
  if (!node) return;
  node->save(node->needs_input_grad(1) ? x : Tensor());
  node->save(node->needs_input_grad(0) ? weight : Tensor());
  const int64_t kh = weight.size(2), kw = weight.size(3);
  const int64_t oph = output_padding(x.size(2), out.size(2), kh, p.stride_h, p.pad_h, p.dilation_h);
  const int64_t opw = output_padding(x.size(3), out.size(3), kw, p.stride_w, p.pad_w, p.dilation_w);
  const RecordedPolicy policy;
  node->backward_fn = [=](Node& n, const TensorList& g) -> TensorList {
    RecordedPolicyScope scope(policy);
    Tensor dx, dw, db;
    if (n.needs_input_grad(0)) dx = engine::conv_transpose2d(g[0], n.saved(1), Tensor(), p, oph, opw);
    if (n.needs_input_grad(1)) dw = engine::conv2d_weight(n.saved(0), g[0], kh, kw, p);
    if (n.needs_input_grad(2)) db = sum(g[0], {0, 2, 3});
    return {dx, dw, db};
  };
}

void conv_transpose2d(const Tensor& y, const Tensor& weight, const Tensor& bias, const Tensor& out,
                      const Conv2dParams& p) {
  auto node = record("ConvTranspose2dBackward", {y, weight, bias}, {out});
  if (!node) return;
  node->save(node->needs_input_grad(1) ? y : Tensor());
  node->save(node->needs_input_grad(0) ? weight : Tensor());
  const int64_t kh = weight.size(2), kw = weight.size(3);
  const RecordedPolicy policy;
  node->backward_fn = [=](Node& n, const TensorList& g) -> TensorList {
    RecordedPolicyScope scope(policy);
    Tensor dy, dw, db;
    if (n.needs_input_grad(0)) dy = engine::conv2d(g[0], n.saved(1), Tensor(), p);
    if (n.needs_input_grad(1)) dw = engine::conv2d_weight(g[0], n.saved(0), kh, kw, p);
    if (n.needs_input_grad(2)) db = sum(g[0], {0, 2, 3});
    return {dy, dw, db};
  };
}

void conv2d_weight(const Tensor& x, const Tensor& gy, const Tensor& out, int64_t kh, int64_t kw,
                   const Conv2dParams& p) {
  auto node = record("Conv2dWeightBackward", {x, gy}, {out});
  if (!node) return;
  node->save(node->needs_input_grad(1) ? x : Tensor());
  node->save(node->needs_input_grad(0) ? gy : Tensor());
  const int64_t oph = output_padding(x.size(2), gy.size(2), kh, p.stride_h, p.pad_h, p.dilation_h);
  const int64_t opw = output_padding(x.size(3), gy.size(3), kw, p.stride_w, p.pad_w, p.dilation_w);
  const RecordedPolicy policy;
  node->backward_fn = [=](Node& n, const TensorList& g) -> TensorList {
    RecordedPolicyScope scope(policy);
    Tensor dx, dgy;
    if (n.needs_input_grad(0)) dx = engine::conv_transpose2d(n.saved(1), g[0], Tensor(), p, oph, opw);
    if (n.needs_input_grad(1)) dgy = engine::conv2d(n.saved(0), g[0], Tensor(), p);
    return {dx, dgy};
  };
}

}  // namespace engine::autograd::formulas
