// mtm.cpp: the modulated transformation module (math in nn/mtm.h; docs/aurora-spec.md section 4).
#include "nn/mtm.h"

#include <string>

namespace engine::nn {

namespace {
ModConvConfig offset_conv_config(int64_t in_channels, int64_t w_dim, int64_t k, double lr_mul, double eps) {
  ENGINE_CHECK(in_channels > 0 && w_dim > 0, "MTM: in_channels ({}) and w_dim ({}) must be positive", in_channels,
               w_dim);
  ENGINE_CHECK(k > 0 && k % 2 == 1, "MTM: kernel_size must be odd and positive, got {}", k);
  ModConvConfig c;
  c.in_channels = in_channels;
  c.out_channels = 3 * k * k;  // 2 k^2 offsets + k^2 mask logits
  c.kernel_size = k;
  c.w_dim = w_dim;
  c.num_kernels = 1;
  c.demodulate = true;
  c.upsample = false;
  c.bias = false;  // out_bias is the only bias of the prediction
  c.activation = Activation::linear;
  c.lr_mul = lr_mul;
  c.eps = eps;
  return c;
}
}  // namespace

MTM::MTM(int64_t in, int64_t w_dim, int64_t k, double lr_mul, double eps)
    : ModConvMTM("MTM"),
      in_channels(in),
      kernel_size(k),
      offset_conv(register_module<ModulatedConv2d>("offset_conv", offset_conv_config(in, w_dim, k, lr_mul, eps))),
      // Spec 4.2: sigma and beta start at 0, so MTM starts as the plain conv.
      out_scale(register_parameter("out_scale", {1, 3 * k * k, 1, 1}, Init::zeros(), 1.0, false)),
      out_bias(register_parameter("out_bias", {1, 3 * k * k, 1, 1}, Init::zeros(), 1.0, false)) {}

std::pair<Tensor, Tensor> MTM::offsets_and_mask(const Tensor& x, const Tensor& w) const {
  const int64_t kk = kernel_size * kernel_size;
  const Tensor o = add(mul(offset_conv.forward(x, w), out_scale.value), out_bias.value);  // [B, 3kk, H, W]
  // [a | b | m] with offset = cat(a, b): since a and b are adjacent, cat(a, b) is simply o's
  // first 2 kk channels, so split once into (2 kk, kk) instead of splitting and concatenating.
  const TensorList parts = split_sizes(o, {2 * kk, kk}, 1);
  return {parts[0], mul(sigmoid(parts[1]), 2.0)};
}

Tensor MTM::conv(const Tensor& x, const Tensor& w, const Tensor& wg, int64_t padding) const {
  ENGINE_CHECK(x.defined() && x.dim() == 4 && x.size(1) == in_channels, "MTM: expected x [B, {}, H, W], got {}",
               in_channels, x.defined() ? x.sizes().str() : std::string("undefined"));
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3), k = kernel_size, kk = k * k;
  ENGINE_CHECK(wg.dim() == 4 && wg.size(0) % B == 0 && wg.size(1) == in_channels && wg.size(2) == k && wg.size(3) == k,
               "MTM: expected grouped_weight [B*Cout, {}, {}, {}] for B = {}, got {}", in_channels, k, k, B,
               wg.sizes().str());
  ENGINE_CHECK(padding == k / 2, "MTM: only 'same' padding {} is supported, got {}", k / 2, padding);
  const auto [offset, mask] = offsets_and_mask(x, w);
  // Batch folded into channels (spec 4.4): B weight groups, B offset groups.
  const Tensor y = deform_conv2d(reshape(x, {1, B * in_channels, H, W}), reshape(offset, {1, B * 2 * kk, H, W}), wg,
                                 Tensor(), reshape(mask, {1, B * kk, H, W}), Conv2dParams::make(1, padding, 1, B));
  return reshape(y, {B, wg.size(0) / B, H, W});
}

}  // namespace engine::nn
