// disc_blocks.cpp: the discriminator's levels (see disc_blocks.h).
#include "nn/disc_blocks.h"

#include <cmath>

namespace engine::nn {

Tensor disc_fir_filter(DType dtype, Device device) {
  return from_vector({1.0 / 8, 3.0 / 8, 3.0 / 8, 1.0 / 8}, {4}, opts(dtype, device));
}

Tensor disc_blur_for_down_conv(const Tensor& x) {
  UpFirDnParams p;
  p.pad_x0 = p.pad_x1 = p.pad_y0 = p.pad_y1 = 2;
  return upfirdn2d(x, disc_fir_filter(x.dtype(), x.device()), p);
}

Tensor disc_downsample2(const Tensor& x) {
  UpFirDnParams p;
  p.down_x = p.down_y = 2;
  p.pad_x0 = p.pad_x1 = p.pad_y0 = p.pad_y1 = 1;
  return upfirdn2d(x, disc_fir_filter(x.dtype(), x.device()), p);
}

namespace {
// Registration helpers (used in the member initialiser list, in registration order).
EqualConv2d& make_conv(Module& m, const char* name, int64_t in, int64_t out, int64_t k, bool bias, int64_t stride,
                       int64_t padding, Activation act) {
  return m.register_module<EqualConv2d>(name, in, out, k, bias, stride, padding, 1.0, act);
}
}  // namespace

DiscLevel::DiscLevel(int64_t r, int64_t img_ch, int64_t in, int64_t out, int64_t head_dim)
    : Module("DiscLevel"),
      entry_resolution(r),
      exit_resolution(r == 4 ? 1 : r / 2),
      in_channels(in),
      out_channels(out),
      is_final(r == 4),
      fromrgb(make_conv(*this, "fromrgb", img_ch, in, 1, true, 1, 0, Activation::lrelu)),
      attn(head_dim > 0 ? &register_module<DiscL2SelfAttention>("attn", in, head_dim) : nullptr),
      conv0(make_conv(*this, "conv0", in, in, 3, true, 1, 1, Activation::lrelu)),
      // Final level: a 4x4 valid conv (StyleGAN2's fc); otherwise stride-2 3x3 after the blur.
      conv1(r == 4 ? make_conv(*this, "conv1", in, out, 4, true, 1, 0, Activation::lrelu)
                   : make_conv(*this, "conv1", in, out, 3, true, 2, 0, Activation::lrelu)) {
  ENGINE_CHECK(r >= 4 && (r & (r - 1)) == 0, "DiscLevel: entry resolution {} must be a power of two >= 4", r);
  if (!is_final) skip = &make_conv(*this, "skip", in, out, 1, false, 1, 0, Activation::linear);
}

Tensor DiscLevel::from_rgb(const Tensor& image) const {
  ENGINE_CHECK(image.dim() == 4 && image.size(1) == fromrgb.in_channels && image.size(2) == entry_resolution &&
                   image.size(3) == entry_resolution,
               "DiscLevel (entry {}): expected an image [N, {}, {}, {}], got {}", entry_resolution,
               fromrgb.in_channels, entry_resolution, entry_resolution, image.sizes().str());
  return fromrgb.forward(image);
}

Tensor DiscLevel::forward(const Tensor& x) const {
  ENGINE_CHECK(x.dim() == 4 && x.size(1) == in_channels && x.size(2) == entry_resolution &&
                   x.size(3) == entry_resolution,
               "DiscLevel (entry {}): expected features [N, {}, {}, {}], got {}", entry_resolution, in_channels,
               entry_resolution, entry_resolution, x.sizes().str());
  Tensor h = attn ? attn->forward(x) : x;
  if (is_final) return conv1.forward(conv0.forward(h));
  const Tensor y = skip->forward(disc_downsample2(h));
  const Tensor main = conv1.forward(disc_blur_for_down_conv(conv0.forward(h)));
  return mul(add(y, main), std::sqrt(0.5));
}

}  // namespace engine::nn
