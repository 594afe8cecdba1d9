// disc_modconv.h: the 1x1 modulated convolution of the discriminator's conditional predictors
// psi_j (docs/aurora-spec.md section 8b: "psi_j is a 4-layer 1x1 conv stack modulated by t_D";
// modulation as StyleGAN2, Karras et al. 2020, eq. 1-3; spec section 3 steps 2-5).
//
// LOCAL STAND-IN: written here because nn/modconv.h (ModulatedConv2d, branch `modconv`) had not
// landed. The parameter names (weight, bias, style.weight, style.bias) follow the same
// convention as the MoE router's modulated linear, so switching to ModulatedConv2d with k = 1 and
// N = 1 later keeps checkpoints loadable. TODO(disc): switch when `modconv` lands.
//
// For a sample b with condition c_b:
//   s_b   = A c_b + b_A                       style (EqualLinear, bias initialised to 1)
//   W     = weight / sqrt(C_in)               equalized lr (Note [equalized lr], layers.h)
//   W'_b  = W * s_b[None, :]                  modulation        [C_out, C_in]
//   W''_b = W'_b / sqrt(sum_i W'_b^2 + eps)   demodulation per output row (demodulate = true)
//   y_b   = act(W''_b x_b + bias)             act: lrelu(0.2) * sqrt(2), or linear
//
// How it is computed (StyleGAN2's non-fused path, exact in real arithmetic): the per-sample weight
// is never built. Modulation scales the INPUT channels, demodulation scales the OUTPUT channels:
//   y_b = d_b * (W (s_b * x_b)),   d_b[o] = rsqrt(sum_i W[o,i]^2 s_b[i]^2 + eps)
//       = rsqrt((s_b^2) (W^2)^T + eps)  -- one [B, C_in] x [C_in, C_out] GEMM for the whole batch
// so the convolution is ONE shared-weight GEMM over all pixels of all samples, instead of a
// batch-grouped conv with B weight copies. For a 1x1 kernel this is strictly cheaper (no
// [B, C_out, C_in] weight tensor, forward or backward) and every step is a differentiable op, so
// R1's double backward goes through it.
//
// Batch replication: the discriminator runs several pyramid paths per sample in one batch
// (Note [paths batched along the batch dim], aurora/discriminator.h): x has N = P * B rows ordered
// path-major (row n belongs to sample n % B), while c has B rows. The style is broadcast over the
// P paths by a view, never copied.
#pragma once
#include "nn/layers.h"
#include "nn/module.h"

namespace engine::nn {

class DiscModulatedConv1x1 : public Module {
 public:
  DiscModulatedConv1x1(int64_t in_channels, int64_t out_channels, int64_t cond_dim, bool demodulate,
                       Activation act, double demod_eps = 1e-8);
  // x [P*B, C_in, H, W], c [B, cond_dim] -> [P*B, C_out, H, W].
  Tensor forward(const Tensor& x, const Tensor& c) const;

  int64_t in_channels, out_channels;
  bool demodulate;
  Activation activation;
  double demod_eps, weight_gain;
  EqualLinear& style;  // c -> s [B, C_in], bias initialised to 1
  Parameter& weight;   // [C_out, C_in, 1, 1], N(0, 1)
  Parameter& bias;     // [C_out], 0
};

}  // namespace engine::nn
