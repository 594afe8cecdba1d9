// torgb.cpp: ToRGB and the skip image sum; the math is in torgb.h (spec section 2).
#include "nn/torgb.h"

namespace engine::nn {

namespace {
ModConvConfig torgb_config(int64_t in, int64_t w_dim, int64_t n, int64_t img, double lr) {
  ModConvConfig c;
  c.in_channels = in;
  c.out_channels = img;
  c.kernel_size = 1;
  c.w_dim = w_dim;
  c.num_kernels = n;
  c.demodulate = false;
  c.upsample = false;
  c.bias = true;
  c.activation = Activation::linear;
  c.lr_mul = lr;
  return c;
}

Tensor as_f32(const Tensor& t) {
  return (t.dtype() == DType::bf16 || t.dtype() == DType::f16) ? to_dtype(t, DType::f32) : t;
}
}  // namespace

ToRGB::ToRGB(int64_t in, int64_t w_dim, int64_t n, int64_t img, double lr)
    : ModulatedConv2d(torgb_config(in, w_dim, n, img, lr)) {}

Tensor skip_image_sum(const Tensor& y, const Tensor& img_prev) {
  if (!img_prev.defined()) return as_f32(y);
  ENGINE_CHECK(y.dim() == 4 && img_prev.dim() == 4 && y.size(0) == img_prev.size(0) && y.size(1) == img_prev.size(1) &&
                   y.size(2) == 2 * img_prev.size(2) && y.size(3) == 2 * img_prev.size(3),
               "skip_image_sum: y {} must be twice the size of the previous image {}", y.sizes().str(),
               img_prev.sizes().str());
  return add(as_f32(y), upsample2d(as_f32(img_prev)));
}

}  // namespace engine::nn
