// losses.h: the adversarial losses of Aurora / GigaGAN (aurora-spec.md section 8), each a
// composition of differentiable ops from tensor/ops.h, so they need no backward formulas of
// their own and are differentiable to any order the ops are.
//
// Logits are the discriminator's raw scores (no sigmoid). The discriminator returns a list of
// multi-scale predictions (GigaGAN's D_ij, i < j: L(L+1)/2 of them, each [B]); the list forms of
// the losses SUM the per-prediction losses, as GigaGAN's objective V_MS-I/O = sum_{i<j} V(G_i, D_ij)
// does (a mean would silently divide the adversarial weight by 15 relative to the CLIP/MoE terms).
// Each per-prediction loss is a MEAN over its elements (the batch), as in StyleGAN2.
//
// The Switch aux loss and the z-loss live in nn/moe.h (MoELayer::losses); they are not repeated.
#pragma once
#include <cstdint>

#include "tensor/tensor.h"

namespace engine::nn {

// ---- Non-saturating logistic GAN loss (spec 8b, V_GAN) --------------------------------------
// D on reals:   mean softplus(-l)     (= -log sigmoid(l): D wants l_real large)
Tensor d_loss_real(const Tensor& logits);
// D on fakes:   mean softplus(l)      (= -log(1 - sigmoid(l)): D wants l_fake small)
Tensor d_loss_fake(const Tensor& logits);
// G (non-saturating): mean softplus(-l_fake)
Tensor g_loss(const Tensor& logits_fake);
// List forms: sum over the predictions of the single-tensor loss. Empty lists are an error.
Tensor d_loss_real(const TensorList& logits);
Tensor d_loss_fake(const TensorList& logits);
Tensor g_loss(const TensorList& logits_fake);
// Whole D adversarial loss: sum_k [mean softplus(-real_k) + mean softplus(fake_k)]; the lists must
// have the same length (prediction k of both comes from the same D_ij head).
Tensor d_loss(const TensorList& logits_real, const TensorList& logits_fake);

// ---- Matching-aware loss (spec 8b) ----------------------------------------------------------
// The mismatched captions c_hat are the batch's captions rolled by one: roll_batch(c, 1).
// roll_batch(t, s) is torch.roll(t, s, 0): out[i] = t[(i - s) mod B]; any integer s, B >= 1.
// Built from narrow + cat, so it is differentiable (the gradient is rolled back by -s).
Tensor roll_batch(const Tensor& t, int64_t shift);
// D side: D additionally minimizes softplus(D(x, c_hat)) + softplus(D(G(c), c_hat)), i.e.
//   sum_k [mean softplus(real_mismatched_k) + mean softplus(fake_mismatched_k)]
// (both mismatched pairs are "negatives"); the lists must have the same length.
Tensor d_match_loss(const TensorList& logits_real_mismatched, const TensorList& logits_fake_mismatched);
// G side (INFERRED: spec 8b says the G-side form is not in the sources; its natural reading is
// that "G also receives the gradient of the mismatched-fake term"): G minimizes the same term D
// does, sum_k mean softplus(D(G(c), c_hat)_k), so G is pushed to make images that do NOT match
// the wrong caption, i.e. images specific to their own caption. The sign matters: the
// non-saturating flip softplus(-D(G(c), c_hat)) would reward G for matching the wrong caption,
// which undoes the point of the loss. G's match to its own caption, softplus(-D(G(c), c)), is
// already the ordinary g_loss.
Tensor g_match_loss(const TensorList& logits_fake_mismatched);

// ---- R1 penalty (Note [R1 double backward], DESIGN.md section 7) ----------------------------
// g = grad(sum over all outputs of sum(output), inputs, create_graph=true)
// r1 = gamma / 2 * mean_b( sum_i sum_{non-batch dims} g_i[b]^2 )
// Multi-input form: with GigaGAN's multi-scale input the real image enters D as a pyramid
// (64, 32, 16, 8, 4 px), and R1 is the squared norm of the gradient w.r.t. the WHOLE input, i.e.
// summed over every level before the batch mean (StyleGAN2's single-input penalty is the case of
// one input). Every input must be [B, ...] with the same B, require grad, and be reached from the
// outputs (an unreached level would silently contribute nothing: it is an error).
// The result is a scalar with a graph to D's parameters: backward(r1 * interval) for lazy R1.
Tensor r1_penalty(const TensorList& outputs, const TensorList& inputs, double gamma);

}  // namespace engine::nn
