// fused.cpp: backward formulas of the fused ops (tensor/ops_fused.cpp).
//
// Note [bias_act double backward]. y = clamp(act(x + b) * gain) with act linear, relu or
// lrelu(alpha). Its backward is the fused primitive
//   gx = bias_act_grad(gy, y) = gy * gain * act'(y) * [|y| < clamp],   gb = sum of gx over every dim
//   but the bias dim (the existing differentiable sum).
// act' is piecewise constant and, since gain > 0 and alpha >= 0, its mask depends only on the
// sign of y (StyleGAN2's bias_act does the same: it saves y, not x + b, for relu and lrelu). So
// bias_act_grad is linear in gy and its derivative with respect to y is zero almost everywhere:
//   d gx / d gy . ggx = bias_act_grad(ggx, y)      (the op is its own backward)
//   d gx / d y        = 0                           (no edge to y is recorded)
// which makes bias_act differentiable to any order: R1's gradient penalty differentiates the
// discriminator's backward once more through exactly this rule. Linear without clamp saves
// nothing: gx = gy * gain.
#include "autograd/formulas/fused.h"

#include "autograd/node.h"
#include "tensor/ops.h"

namespace engine::autograd::formulas {

namespace {

std::optional<double> clamp_of(const kernels::BiasActParams& p) {
  return p.clamp >= 0 ? std::optional<double>(p.clamp) : std::nullopt;
}

// dL/dx from dL/dy (Note [bias_act double backward]); y is needed unless linear without clamp.
Tensor bias_act_input_grad(const Tensor& g, const Tensor& y, const kernels::BiasActParams& p) {
  if (p.act == 0 && p.clamp < 0) return p.gain == 1.0 ? g : mul(g, p.gain);
  return engine::bias_act_grad(g, y, BiasActKind(p.act), p.alpha, p.gain, clamp_of(p));
}

}  // namespace

void bias_act(const Tensor& x, const Tensor& bias, const Tensor& out, int64_t dim, const kernels::BiasActParams& p) {
  auto node = record("BiasActBackward", {x, bias}, {out});
  if (!node) return;
  const bool needs_y = p.act != 0 || p.clamp >= 0;
  if (needs_y) node->save(out);  // Note [saved outputs]
  const int64_t nd = x.dim();
  const int64_t d = bias.defined() ? (dim < 0 ? dim + nd : dim) : 0;
  node->backward_fn = [p, needs_y, nd, d](Node& n, const TensorList& g) -> TensorList {
    const Tensor gx = bias_act_input_grad(g[0], needs_y ? n.saved(0) : Tensor(), p);
    Tensor gb;
    if (n.needs_input_grad(1)) {
      Dims others;
      for (int64_t k = 0; k < nd; ++k)
        if (k != d) others.push_back(k);
      gb = others.empty() ? gx : sum(gx, others);
    }
    return {gx, gb};
  };
}

void bias_act_grad(const Tensor& gy, const Tensor& y, const Tensor& out, const kernels::BiasActParams& p) {
  auto node = record("BiasActGradBackward", {gy}, {out});  // no edge to y: Note [bias_act double backward]
  if (!node) return;
  node->save(y);
  node->backward_fn = [p](Node& n, const TensorList& g) -> TensorList {
    return {engine::bias_act_grad(g[0], n.saved(0), BiasActKind(p.act), p.alpha, p.gain, clamp_of(p))};
  };
}

}  // namespace engine::autograd::formulas
