// modconv.cpp: adaptive modulated convolution and its token-layout 1x1 form. The math is in
// modconv.h (docs/aurora-spec.md sections 2 "Upsampling" and 3).
//
// Note [modulation without weight-sized temporaries]
// Written literally, spec 3.3 touches the per-sample weight W_b [B, Cout, Cin, k, k] (B times the
// kernel; 1600 x 1600 x 3 x 3 x B floats at 4x4/8x8) about seven times: normalise K, multiply by s,
// square, sum, rsqrt-multiply. All the scales are per (b, o, i), so they fold into one factor:
//   q[o, i]   = sum_{kh,kw} K[o, i]^2                          [(B,) Cout, Cin]  (one pass over K)
//   r2[o]     = sum_i q[o, i] / (Cin k^2)                      mean square of row o (the rms^2)
//   s_n       = s / sqrt(mean(s^2))                            scalar over the whole batch tensor
//   d[b, o]   = rsqrt( sum_i q[o, i] s_n[b, i]^2 / r2[o] + eps )   = rsqrt(sum W_b^2 + eps), exact
//   W_b       = K * (s_n[b, i] * d[b, o] / sqrt(r2[o]))        the only weight-sized pass
// The fused op engine::modulated_weight (tensor/ops_fused.cpp, tensor/kernels/modulated_weight.h)
// computes exactly this in three passes (q; d and s_n; the write) and its backward in six, on the
// CPU or CUDA; as a chain of ~15 small differentiable ops it was over a thousand kernel launches
// per generator step on a GPU. For N > 1 the selected bank K_b = sum_i alpha_{b,i} K_i is one GEMM
// [B, N] x [N, Cout Cin k^2] before it (`batched`). In real arithmetic this equals the released
// code's sequence exactly; in f32 the two differ by rounding only (tests/test_modconv.cpp,
// tests/test_modulated_weight.cpp). The op is differentiable to second order (R1 / path-length
// style double backward through the generator).
//
// Note [fused upsampling padding]
// StyleGAN2's conv2d_resample for up = 2 with a k x k kernel (k > 1) and the 4-tap FIR: the padding
// of upsample2d around the conv is
//   p0 = k/2 + (fw + up - 1)/2 = k/2 + 2,   p1 = k/2 + (fw - up)/2 = k/2 + 1      (fw = 4)
// and the transposed conv (stride 2) already "uses" (k - 1) and (k - up) of them:
//   px0 = p0 - (k - 1),  px1 = p1 - (k - up);   for k = 3: px0 = px1 = 1
//   pt  = max(min(-px0, -px1), 0)          (the part done as conv_transpose2d padding; 0 for k <= 5)
//   y   = conv_transpose2d(x, W, stride 2, padding pt)            [2H + k - 2 - 2 pt]
//   y   = upfirdn2d(y, f, pad (px0 + pt, px1 + pt, ...), gain 4)   [2H]
// For k = 3: 2H + 1 after the transposed conv, + 2 pad - 3 (filter) = 2H. The transposed conv uses
// the weight as-is (StyleGAN2-ADA passes flip_weight = False for up > 1, which means no flip),
// grouped: weight [B*Cin, Cout, k, k] = W_b transposed in its two channel dims. modulated_weight
// writes W_b directly in that layout (transposed = true), so no transpose copy is made.
// For k = 1: grouped 1x1 conv, then upfirdn2d(up 2, pad (k/2 + 2, k/2 + 1) = (2, 1), gain 4).
#include "nn/modconv.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "tensor/memory/profiler.h"

namespace engine::nn {

namespace {

std::string shape_str(const Tensor& t) { return t.defined() ? t.sizes().str() : std::string("undefined"); }

void check_w(const char* who, const Tensor& w, int64_t batch, int64_t w_dim) {
  ENGINE_CHECK(w.defined() && w.dim() == 2 && w.size(0) == batch && w.size(1) == w_dim,
               "{}: expected w [{}, {}], got {}", who, batch, w_dim, shape_str(w));
}

ModulatedWeightParams mod_params(bool batched, bool demodulate, double gain, double eps, bool transposed) {
  ModulatedWeightParams p;
  p.batched = batched;
  p.demodulate = demodulate;
  p.weight_gain = gain;
  p.eps = eps;
  p.transposed = transposed;
  return p;
}

// A batch-grouped 1x1 conv as one batched GEMM on the [B, C, H*W] views:
// y_b = W_b [Cout, Cin] x_b [Cin, HW]. No im2col and no copies (its backward is two more bmm).
// wb: the per-sample weights, B*Cout*Cin elements ([B, Cout, Cin, 1, 1] or [B*Cout, Cin, 1, 1]).
Tensor conv1x1(const Tensor& x, const Tensor& wb) {
  const int64_t B = x.size(0), cin = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t cout = wb.numel() / (B * cin);
  return reshape(bmm(reshape(wb, {B, cout, cin}), reshape(x, {B, cin, H * W})), {B, cout, H, W});
}

}  // namespace

// ---- Functional pieces ----------------------------------------------------------------------

Tensor modulate_weight(const Tensor& weight, const Tensor& styles, bool demodulate, double weight_gain, double eps) {
  ENGINE_CHECK(weight.defined() && styles.defined() && styles.dim() == 2,
               "modulate_weight: expected weight [Cout, Cin, ...] and styles [B, Cin], got {} and {}",
               shape_str(weight), shape_str(styles));
  ENGINE_CHECK(weight.dim() >= 2 && weight.size(1) == styles.size(1),
               "modulate_weight: weight {} does not match styles {} (Cin)", shape_str(weight), shape_str(styles));
  return modulated_weight(weight, styles, mod_params(false, demodulate, weight_gain, eps, false));
}

Tensor modulated_linear(const Tensor& x, const Tensor& styles, const Tensor& weight, const Tensor& bias,
                        bool demodulate, double weight_gain, double bias_gain, Activation act, double eps) {
  ENGINE_CHECK(x.defined() && x.dim() == 3, "modulated_linear: expected x [B, T, Cin], got {}", shape_str(x));
  ENGINE_CHECK(weight.defined() && weight.dim() == 2 && weight.size(1) == x.size(2),
               "modulated_linear: expected weight [Cout, {}], got {}", x.size(2), shape_str(weight));
  ENGINE_CHECK(styles.defined() && styles.dim() == 2 && styles.size(0) == x.size(0) && styles.size(1) == x.size(2),
               "modulated_linear: expected styles [{}, {}], got {}", x.size(0), x.size(2), shape_str(styles));
  ENGINE_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
               "modulated_linear: expected bias [{}], got {}", weight.size(0), shape_str(bias));
  // y_b = x_b W_b^T. W_b^T [B, Cin, Cout] is modulated_weight's transposed layout, so the bmm
  // reads a contiguous operand.
  const Tensor wt = modulated_weight(weight, styles, mod_params(false, demodulate, weight_gain, eps, true));
  Tensor y = bmm(x, wt);                                    // [B, T, Cout]
  return bias_act_along(y, bias.defined() && bias_gain != 1.0 ? mul(bias, bias_gain) : bias, -1, act);
}

Tensor fir_filter_1331(DType dtype, Device device) {
  return from_vector({1.0 / 8, 3.0 / 8, 3.0 / 8, 1.0 / 8}, {4}, TensorOptions{dtype, device, memory::Kind::activation});
}

Tensor upsample2d(const Tensor& x) {
  UpFirDnParams p;
  p.up_x = p.up_y = 2;
  p.pad_x0 = p.pad_y0 = 2;
  p.pad_x1 = p.pad_y1 = 1;
  p.gain = 4.0;
  return upfirdn2d(x, fir_filter_1331(x.dtype(), x.device()), p);
}

// ---- ModulatedLinear ------------------------------------------------------------------------

ModulatedLinear::ModulatedLinear(int64_t in, int64_t out, int64_t w_dim, bool has_bias, Activation act, double lr,
                                 bool demod, double eps_)
    : Module("ModulatedLinear"),
      in_features(in),
      out_features(out),
      activation(act),
      lr_mul(lr),
      weight_gain(lr / std::sqrt(double(in))),
      eps(eps_),
      demodulate(demod),
      weight(register_parameter("weight", {out, in}, Init::normal(1.0 / lr), lr)),
      // Spec 3.2 / 11.5: every modulation style bias starts at 1.
      style(register_module<EqualLinear>("style", w_dim, in, true, 1.0, lr)) {
  ENGINE_CHECK(in > 0 && out > 0 && w_dim > 0 && lr > 0,
               "ModulatedLinear: in ({}), out ({}), w_dim ({}) and lr_mul ({}) must be positive", in, out, w_dim, lr);
  if (has_bias) bias = &register_parameter("bias", {out}, Init::zeros(), lr, false);
}

Tensor ModulatedLinear::modulated_weight(const Tensor& w) const {
  return modulate_weight(weight.value, style.forward(w), demodulate, weight_gain, eps);
}

Tensor ModulatedLinear::forward(const Tensor& x, const Tensor& w) const {
  ENGINE_CHECK(x.defined() && x.dim() == 3 && x.size(2) == in_features,
               "ModulatedLinear: expected x [B, T, {}], got {}", in_features, shape_str(x));
  check_w("ModulatedLinear", w, x.size(0), style.in_features);
  return modulated_linear(x, style.forward(w), weight.value, bias ? bias->value : Tensor(), demodulate, weight_gain,
                          lr_mul, activation, eps);
}

// ---- ModulatedConv2d ------------------------------------------------------------------------

namespace {
const ModConvConfig& checked(const ModConvConfig& c) {
  ENGINE_CHECK(c.in_channels > 0 && c.out_channels > 0 && c.w_dim > 0,
               "ModulatedConv2d: in_channels ({}), out_channels ({}) and w_dim ({}) must be positive", c.in_channels,
               c.out_channels, c.w_dim);
  ENGINE_CHECK(c.kernel_size > 0 && c.kernel_size % 2 == 1,
               "ModulatedConv2d: kernel_size must be odd and positive, got {}", c.kernel_size);
  ENGINE_CHECK(c.num_kernels >= 1, "ModulatedConv2d: num_kernels must be >= 1, got {}", c.num_kernels);
  ENGINE_CHECK(c.lr_mul > 0 && c.eps >= 0, "ModulatedConv2d: lr_mul ({}) must be positive and eps ({}) >= 0", c.lr_mul,
               c.eps);
  return c;
}
}  // namespace

ModulatedConv2d::ModulatedConv2d(const ModConvConfig& c)
    : Module("ModulatedConv2d"),
      config(checked(c)),
      weight_gain(c.lr_mul / std::sqrt(double(c.in_channels * c.kernel_size * c.kernel_size))),
      weight(register_parameter("weight", {c.num_kernels, c.out_channels, c.in_channels, c.kernel_size, c.kernel_size},
                                Init::normal(1.0 / c.lr_mul), c.lr_mul)),
      bias(c.bias ? &register_parameter("bias", {c.out_channels}, Init::zeros(), c.lr_mul, false) : nullptr),
      style(register_module<EqualLinear>("style", c.w_dim, c.in_channels, true, 1.0, c.lr_mul)) {
  if (c.num_kernels > 1)
    filter_weight = &register_module<EqualLinear>("filter_weight", c.w_dim, c.num_kernels, true, 1.0, c.lr_mul);
}

void ModulatedConv2d::check_mtm_allowed() const {
  ENGINE_CHECK(!config.upsample, "ModulatedConv2d: MTM applies only to non-upsampling convs (spec 4)");
  ENGINE_CHECK(mtm == nullptr, "ModulatedConv2d: an MTM module is already attached");
}

Tensor ModulatedConv2d::kernel_weights(const Tensor& w) const {
  if (!filter_weight) return Tensor();
  return softmax(filter_weight->forward(w), 1);
}

Tensor ModulatedConv2d::selected_kernel(const Tensor& w) const {
  const ModConvConfig& c = config;
  const int64_t k = c.kernel_size;
  if (c.num_kernels == 1) return reshape(weight.value, {c.out_channels, c.in_channels, k, k});
  // sum_i alpha_{b,i} K_i as one GEMM [B, N] x [N, Cout Cin k^2].
  const Tensor alpha = kernel_weights(w);
  const Tensor bank = reshape(weight.value, {c.num_kernels, c.out_channels * c.in_channels * k * k});
  return reshape(matmul(alpha, bank), {w.size(0), c.out_channels, c.in_channels, k, k});
}

Tensor ModulatedConv2d::modulated_weight(const Tensor& w) const {
  const bool batched = config.num_kernels > 1;
  const Tensor kernel = selected_kernel(w);
  return engine::modulated_weight(kernel, style.forward(w),
                                  mod_params(batched, config.demodulate, weight_gain, config.eps, false));
}

Tensor ModulatedConv2d::forward(const Tensor& x, const Tensor& w) const {
  const ModConvConfig& c = config;
  ENGINE_CHECK(x.defined() && x.dim() == 4 && x.size(1) == c.in_channels,
               "ModulatedConv2d: expected x [B, {}, H, W], got {}", c.in_channels, shape_str(x));
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3), k = c.kernel_size;
  check_w("ModulatedConv2d", w, B, c.w_dim);
  ENGINE_CHECK(x.dtype() == w.dtype(), "ModulatedConv2d: x and w must share a dtype");

  const bool batched = c.num_kernels > 1;
  const Tensor kernel = selected_kernel(w);
  const Tensor styles = style.forward(w);
  // The per-sample weight in the layout the conv reads (Note [modulation without weight-sized
  // temporaries]): [B, Cout, Cin, k, k], or [B, Cin, Cout, k, k] for the transposed conv.
  auto weights = [&](bool transposed) {
    return engine::modulated_weight(kernel, styles, mod_params(batched, c.demodulate, weight_gain, c.eps, transposed));
  };
  const Tensor xg = reshape(x, {1, B * c.in_channels, H, W});  // a view: batch folded into channels
  Tensor y;
  if (!c.upsample) {
    const Tensor wg = reshape(weights(false), {B * c.out_channels, c.in_channels, k, k});
    if (mtm) {
      y = mtm->conv(x, w, wg, k / 2);
    } else if (k == 1) {
      y = conv1x1(x, wg);
    } else {
      y = conv2d(xg, wg, Tensor(), Conv2dParams::make(1, k / 2, 1, B));
    }
  } else if (k == 1) {
    y = upsample2d(conv1x1(x, weights(false)));
  } else {
    // Note [fused upsampling padding].
    const int64_t p0 = k / 2 + 2, p1 = k / 2 + 1;
    const int64_t px0 = p0 - (k - 1), px1 = p1 - (k - 2);
    const int64_t pt = std::max<int64_t>(std::min(-px0, -px1), 0);
    const Tensor wt = reshape(weights(true), {B * c.in_channels, c.out_channels, k, k});
    y = conv_transpose2d(xg, wt, Tensor(), Conv2dParams::make(2, pt, 1, B));
    UpFirDnParams p;
    p.pad_x0 = p.pad_y0 = px0 + pt;
    p.pad_x1 = p.pad_y1 = px1 + pt;
    p.gain = 4.0;
    y = upfirdn2d(y, fir_filter_1331(y.dtype(), y.device()), p);
  }
  y = reshape(y, {B, c.out_channels, y.size(-2), y.size(-1)});
  return bias_act(y, bias ? bias->value : Tensor(), c.lr_mul, c.activation);
}

}  // namespace engine::nn
