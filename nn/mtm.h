// mtm.h: the modulated transformation module (docs/aurora-spec.md section 4; MTM, Yang et al.,
// NeurIPS 2023; DCNv2, Zhu et al. 2019). It implements ModulatedConv2d's MTM hook (Note [MTM hook],
// nn/modconv.h): the main 3x3 conv of a non-upsampling ModulatedConv2d becomes a modulated
// deformable conv whose offsets and mask are predicted from the same input x and the latent w.
//
//   o      = offset_conv(x, w) * out_scale + out_bias         [B, 27, H, W]
//            offset_conv: 3x3 modulated + demodulated conv Cin -> 27 = 3 k^2 (own style affine,
//            bias init 1; no conv bias: out_bias plays that role), padding k/2, linear;
//            out_scale (sigma), out_bias (beta): [1, 27, 1, 1], initialised to 0 (spec 4.2), so at
//            initialisation offsets = 0 and mask = 1: exactly the regular modulated conv.
//   [a | b | m] = split(o, 9 channels each)
//   offset = cat(a, b)                  [B, 18, H, W]; read by deform_conv2d as interleaved (dy, dx)
//                                        pairs per tap (torchvision's layout, kept for checkpoint
//                                        compatibility: spec 4.4 / 11.4)
//   mask   = 2 sigmoid(m)               [B, 9, H, W], in [0, 2]
//   y      = deform_conv2d(x [1, B Cin, H, W], offset [1, B 18, H, W], W_b [B Cout, Cin, k, k],
//                          mask [1, B 9, H, W], groups = B, offset groups = B, padding k/2)
// i.e. the batch is folded into channels as in the released code (spec 4.4): the per-sample
// kernel W_b (already modulated and demodulated by the host ModulatedConv2d) and the per-sample
// offsets each form one group. Bias and activation stay in the host ModulatedConv2d.
//
// Parameter names (under the host's `mtm.`): offset_conv.{weight [1, 27, Cin, k, k],
// style.weight [Cin, w_dim], style.bias [Cin]}, out_scale [1, 27, 1, 1], out_bias [1, 27, 1, 1].
// (The released checkpoint's names for these are not given in the spec; a converter maps them.)
// Parameter count per MTM: 27 Cin k^2 + w_dim Cin + Cin + 54 (matches spec section 10's conv lines).
#pragma once
#include "nn/modconv.h"

namespace engine::nn {

class MTM : public ModConvMTM {
 public:
  MTM(int64_t in_channels, int64_t w_dim, int64_t kernel_size = 3, double lr_mul = 1.0, double eps = 1e-8);

  // Note [MTM hook]: x [B, Cin, H, W], w [B, w_dim], grouped_weight [B*Cout, Cin, k, k] ->
  // [B, Cout, H, W] (before the host's bias and activation).
  Tensor conv(const Tensor& x, const Tensor& w, const Tensor& grouped_weight, int64_t padding) const override;

  // The offsets [B, 2 k^2, H, W] and mask [B, k^2, H, W] the deformable conv uses.
  std::pair<Tensor, Tensor> offsets_and_mask(const Tensor& x, const Tensor& w) const;

  int64_t in_channels, kernel_size;
  ModulatedConv2d& offset_conv;
  Parameter& out_scale;  // sigma [1, 3 k^2, 1, 1], zeros
  Parameter& out_bias;   // beta  [1, 3 k^2, 1, 1], zeros
};

}  // namespace engine::nn
