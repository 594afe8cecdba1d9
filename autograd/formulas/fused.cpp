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
//
// Note [modulated_weight backward]. W = modulated_weight(K, s) (tensor/kernels/modulated_weight.h
// has the forward and the chain rule written out). Its backward node saves K and s only (the
// small statistics q, sum s^2 are recomputed: one extra read of K) and has two implementations of
// the same formulas:
//   - without create_graph (every training step's first-order backward): the fused kernels,
//     engine::modulated_weight_grad (6 passes on the CPU / 6-8 launches on CUDA);
//   - with create_graph (a double backward through the generator, gradcheck's gradgradcheck):
//     modulated_weight_grad_ops below, the same formulas as ~40 differentiable ops, so the second
//     derivative follows by composition. Slower, but only taken when a graph of the backward is
//     asked for.
// K and s are saved packable (Note [bf16 saved activations], autograd/node.h): under the bf16
// scope a selected bank K_b (an activation, B times the kernel) is kept as bf16, as the composite
// this op replaced kept its operands; a shared kernel is a parameter and s is small, so both stay
// exact.
// Both are compared with PyTorch (tests/test_modulated_weight.cpp: the create_graph parity run
// checks the op form and the double backward, a plain backward the fused kernels).
#include "autograd/formulas/fused.h"

#include "autograd/grad_mode.h"
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

void modulated_weight(const Tensor& kernel, const Tensor& styles, const Tensor& out, const ModulatedWeightParams& p) {
  auto node = record("ModulatedWeightBackward", {kernel, styles}, {out});
  if (!node) return;
  node->save(kernel);
  node->save(styles);
  node->backward_fn = [p](Node& n, const TensorList& g) -> TensorList {
    const bool need_k = n.needs_input_grad(0), need_s = n.needs_input_grad(1);
    if (grad_enabled()) return modulated_weight_grad_ops(g[0], n.saved(0), n.saved(1), p, need_k, need_s);
    return engine::modulated_weight_grad(g[0], n.saved(0), n.saved(1), p, need_k, need_s);
  };
}

TensorList modulated_weight_grad_ops(const Tensor& grad, const Tensor& kernel, const Tensor& styles,
                                     const ModulatedWeightParams& p, bool need_kernel, bool need_styles) {
  const int64_t B = styles.size(0), I = styles.size(1);
  const int64_t Bk = p.batched ? B : 1;
  const int64_t O = kernel.size(p.batched ? 1 : 0);
  const int64_t T = kernel.numel() / (Bk * O * I);
  const Tensor K4 = reshape(kernel, {Bk, O, I, T});
  Tensor G4 = reshape(grad, {B, p.transposed ? I : O, p.transposed ? O : I, T});
  if (p.transposed) G4 = transpose(G4, 1, 2);  // [B, O, I, T]
  Tensor dK, ds;
  if (!p.demodulate) {  // W = K (s gain)
    if (need_kernel) {
      Tensor t = mul(G4, reshape(mul(styles, p.weight_gain), {B, 1, I, 1}));
      if (!p.batched) t = sum(t, {0}, true);
      dK = reshape(t, kernel.sizes());
    }
    if (need_styles) ds = mul(sum(mul(G4, K4), {1, 3}), p.weight_gain);
    return {dK, ds};
  }
  // The names of kernels/modulated_weight.h.
  const double n_row = double(I * T), n_s = double(B * I);
  const Tensor q = sum(square(K4), {3});          // [Bk, O, I]
  const Tensor rs = rsqrt(mean(square(styles)));  // m^(-1/2), 0-d
  const Tensor sn = mul(styles, rs);              // [B, I]
  const Tensor snv = unsqueeze(sn, 1);            // [B, 1, I]
  const Tensor sn2 = unsqueeze(square(sn), 1);    // [B, 1, I]
  const Tensor r2 = div(sum(q, {2}), n_row);      // [Bk, O]
  const Tensor t = sum(mul(q, sn2), {2});         // [B, O]
  const Tensor dd = rsqrt(add(div(t, r2), p.eps));
  const Tensor rho = sqrt(r2);
  const Tensor c = div(dd, rho);                   // [B, O]
  const Tensor P = sum(mul(G4, K4), {3});          // [B, O, I]
  const Tensor A = sum(mul(P, snv), {2});          // [B, O]
  const Tensor gu = mul(mul(div(A, rho), mul(dd, square(dd))), -0.5);
  const Tensor gt = div(gu, r2);
  const Tensor gr2 = sub(div(mul(mul(A, dd), -0.5), mul(r2, rho)), div(mul(gu, t), square(r2)));
  if (need_kernel) {
    Tensor gq = add(mul(unsqueeze(gt, 2), sn2), div(unsqueeze(gr2, 2), n_row));  // [B, O, I]
    Tensor direct = mul(G4, unsqueeze(mul(unsqueeze(c, 2), snv), 3));            // [B, O, I, T]
    if (!p.batched) {
      gq = sum(gq, {0}, true);
      direct = sum(direct, {0}, true);
    }
    dK = reshape(add(direct, mul(K4, unsqueeze(mul(gq, 2.0), 3))), kernel.sizes());
  }
  if (need_styles) {
    const Tensor gsn = sum(add(mul(P, unsqueeze(c, 2)), mul(mul(unsqueeze(gt, 2), q), mul(snv, 2.0))), {1});
    const Tensor gm = mul(mul(mul(rs, square(rs)), sum(mul(gsn, styles))), -0.5);  // dL/dm
    ds = add(mul(gsn, rs), mul(styles, mul(gm, 2.0 / n_s)));
  }
  return {dK, ds};
}

}  // namespace engine::autograd::formulas
