// disc_attention.h: L2 self-attention over the pixels of a feature map, for the discriminator's
// levels (docs/aurora-spec.md section 8b: "each [level] with self-attention and a stride-2
// downsampling conv"; GigaGAN section 3.1 uses L2 attention in D as in G for Lipschitz
// continuity, after Kim, Papamakarios and Mnih, "The Lipschitz Constant of Self-Attention", 2021).
//
// LOCAL STAND-IN: nn/attention.h (branch `attention`) had not landed. TODO(disc): switch to it if
// it offers this variant (tied Q = K, squared distance); see "choices" below for why D differs
// from the generator's attention of spec section 5.
//
// x [N, C, H, W] is read as N sequences of T = H*W tokens of width C. With heads h = C / d:
//   u     = LayerNorm_C(token)                          (affine, eps 1e-5, statistics in f32/f64)
//   q     = W_qk u,  v = W_v u                          [N, h, T, d] (no biases)
//   l_ij  = -||q_i - q_j||^2 / sqrt(d)                  squared L2 distance, Q and K TIED
//   A     = softmax_j(l),   o = A v                     per head
//   y     = (x + W_o o + b_o) * sqrt(1/2)               residual, variance-preserving gain
// All linears use equalized lr (Note [equalized lr], layers.h).
//
// Choices (documented because no D code is released, spec section 12):
//   - Tied Q = K and the SQUARED distance are Kim et al.'s Lipschitz construction, which GigaGAN
//     cites. The generator's released attention (spec section 5, section 11 quirk 2) uses untied
//     Q, K and the plain distance -||q - k||; with tied weights the plain distance would put
//     sqrt(0) on the diagonal (q_i = k_i), whose derivative is infinite, so R1's double backward
//     would produce inf/NaN. The squared distance is smooth everywhere.
//   - Note [L2 logits without the row constant]: -||q_i - q_j||^2 = 2 q_i.q_j - ||q_j||^2 - ||q_i||^2
//     and softmax over j is invariant to the row constant ||q_i||^2, so we compute
//     l_ij = (2 q_i.q_j - ||q_j||^2) / sqrt(d): one batched GEMM plus a broadcast, and exactly
//     the same attention in real arithmetic (the parity reference computes the full distance).
//   - Computed by the fused op l2_attention_fused(q, q, v, 0, L2AttnForm::sq_distance)
//     (tensor/ops_l2_attention.h) for f32 / f64: no T x T matrix kept for backward; R1 differentiates
//     its create_graph formulas (disc_attention.cpp).
//   - The residual gain sqrt(1/2) matches the sqrt(1/2) of StyleGAN2's residual conv blocks that
//     follow, so a level does not grow the activation variance.
//
// Parameter names: norm.weight, norm.bias [C]; qk.weight, v.weight, out.weight [C, C]; out.bias.
#pragma once
#include "nn/layers.h"
#include "nn/module.h"

namespace engine::nn {

// LayerNorm's affine parameters over the last dim (torch.nn.LayerNorm names: weight, bias).
class DiscLayerNorm : public Module {
 public:
  explicit DiscLayerNorm(int64_t channels, double eps = 1e-5);
  Tensor forward(const Tensor& x) const;  // normalises the last dim

  int64_t channels;
  double eps;
  Parameter& weight;  // ones
  Parameter& bias;    // zeros
};

class DiscL2SelfAttention : public Module {
 public:
  DiscL2SelfAttention(int64_t channels, int64_t head_dim);
  Tensor forward(const Tensor& x) const;  // [N, C, H, W] -> [N, C, H, W]

  int64_t channels, head_dim, heads;
  DiscLayerNorm& norm;
  EqualLinear& qk;
  EqualLinear& v;
  EqualLinear& out;
};

}  // namespace engine::nn
