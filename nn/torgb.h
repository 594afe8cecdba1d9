// torgb.h: ToRGB and the skip-architecture image sum (docs/aurora-spec.md section 2 "ToRGB / skip
// architecture"; StyleGAN2's "skip" generator, Karras et al. 2020, Fig. 7).
//
//   y_r   = ToRGB_r(h, w): a 1x1 adaptive ModulatedConv2d (N = N_r kernels), NO demodulation,
//           linear, with bias:  W_b = K_b * s_b * lr_mul / sqrt(Cin)   (spec 3.4)
//   img_4 = y_4;  img_r = y_r + Up2(img_{r/2})    Up2 = upfirdn2d(FIR [1,3,3,1], up 2, gain 4)
// The released model names these layers `output_res_{r}x{r}` (AdaptiveModulateConvLayer with
// kernel_size 1, demodulate False, activation linear): parameter names as ModulatedConv2d.
#pragma once
#include "nn/modconv.h"

namespace engine::nn {

class ToRGB : public ModulatedConv2d {
 public:
  ToRGB(int64_t in_channels, int64_t w_dim, int64_t num_kernels = 1, int64_t image_channels = 3, double lr_mul = 1.0);
};

// img_r = y + Up2(img_prev) (img_prev undefined: img_r = y). The spec keeps this sum in fp32: both
// operands are converted to f32 when they are a 16-bit float type.
Tensor skip_image_sum(const Tensor& y, const Tensor& img_prev);

}  // namespace engine::nn
