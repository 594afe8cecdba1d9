// disc_blocks.h: one level of the discriminator's feature stack phi (docs/aurora-spec.md section
// 8b: "a stack of levels, each with self-attention and a stride-2 downsampling conv"; the conv
// block is StyleGAN2's residual discriminator block, Karras et al. 2020, Fig. 7c and appendix B).
//
// A level owns the fromRGB conv of its entry resolution r (the pyramid image x_r enters phi here,
// spec "multi-scale input") and maps features [N, C_in, r, r] to [N, C_out, r/2, r/2]:
//
//   fromrgb(x_img) = lrelu(Conv1x1(x_img) + b)                           3 -> C_in
//   level(h):
//     h  = Attn(h)                            (optional, nn/disc_attention.h)
//     y  = Conv1x1_nobias(Down2(h))                                      skip
//     h' = lrelu(Conv3x3(h) + b)                                         conv0, C_in -> C_in
//     h' = lrelu(Conv3x3_stride2(Blur(h')) + b)                          conv1, C_in -> C_out
//     out = (y + h') * sqrt(1/2)
// Note [FIR downsampling] (StyleGAN2's conv2d_resample): f = [1,3,3,1]/8 applied along both axes
// (the 4x4 filter outer(f, f), unit DC gain), through upfirdn2d:
//   Blur  = upfirdn2d(h, f, pad 2 on every side)            then a 3x3 conv, stride 2, no padding:
//           r + 4 - 3 = r + 1 pixels, (r + 1 - 3) / 2 + 1 = r / 2
//   Down2 = upfirdn2d(h, f, down 2, pad 1 on every side)    r + 2 - 3 = r - 1 -> r / 2
// i.e. low-pass before subsampling, so D sees no aliasing (pads: (fw - down + k - 1) / 2 on each
// side for a k x k conv with fw = 4, down = 2).
//
// The last level (entry resolution 4, exit 1; spec "feature resolutions 32, 16, 8, 4, 1") is
// StyleGAN2's epilogue without minibatch-std (GigaGAN's D has none, spec section 8b):
//     h  = Attn(h) (optional);  h = lrelu(Conv3x3(h) + b)  (conv0);
//     out = lrelu(Conv4x4_valid(h) + b)  (conv1: [N, C_out, 1, 1], which is StyleGAN2's
//           flatten + fully connected layer written as a conv so the predictor sees a 1x1 map)
// It has no skip branch (the 4x4 -> 1x1 map is already a single dense layer).
//
// All convs use equalized lr (Note [equalized lr], layers.h) and lrelu(0.2) * sqrt(2).
// Parameter names: fromrgb.{weight,bias}, attn.*, conv0.{weight,bias}, conv1.{weight,bias},
// skip.weight (StyleGAN2's discriminator block names).
#pragma once
#include "nn/disc_attention.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace engine::nn {

// The StyleGAN2 resampling filter [1,3,3,1]/8 (applied separably) as a 1-D tensor.
Tensor disc_fir_filter(DType dtype, Device device);
// Note [FIR downsampling]: blur keeping the size + 4 - 3 = size + 1 (before a stride-2 3x3 conv).
Tensor disc_blur_for_down_conv(const Tensor& x);
// Note [FIR downsampling]: blur and subsample by 2.
Tensor disc_downsample2(const Tensor& x);

class DiscLevel : public Module {
 public:
  // entry_resolution r >= 4; r == 4 builds the epilogue level (exit 1), otherwise exit r / 2.
  // attention_head_dim <= 0: no attention block.
  DiscLevel(int64_t entry_resolution, int64_t image_channels, int64_t in_channels, int64_t out_channels,
            int64_t attention_head_dim);

  Tensor from_rgb(const Tensor& image) const;  // [N, img_ch, r, r] -> [N, C_in, r, r]
  Tensor forward(const Tensor& h) const;       // [N, C_in, r, r] -> [N, C_out, exit, exit]

  int64_t entry_resolution, exit_resolution, in_channels, out_channels;
  bool is_final;
  EqualConv2d& fromrgb;
  DiscL2SelfAttention* attn = nullptr;
  EqualConv2d& conv0;
  EqualConv2d& conv1;
  EqualConv2d* skip = nullptr;
};

}  // namespace engine::nn
