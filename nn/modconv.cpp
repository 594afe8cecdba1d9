// modconv.cpp: adaptive modulated convolution and its token-layout 1x1 form. The math is in
// modconv.h (docs/aurora-spec.md sections 2 "Upsampling" and 3).
//
// Note [modulation without weight-sized temporaries]
// Written literally, spec 3.3 touches the per-sample weight W_b [B, Cout, Cin, k, k] (B times the
// kernel; 1600 x 1600 x 3 x 3 x B floats at 4x4/8x8) about seven times: normalise K, multiply by s,
// square, sum, rsqrt-multiply. All the scales are per (b, o, i), so we fold them into one small
// factor F [B, Cout, Cin] and multiply the kernel once:
//   q[o, i]   = sum_{kh,kw} K[o, i]^2                          [(B,) Cout, Cin]  (one pass over K)
//   r2[o]     = sum_i q[o, i] / (Cin k^2)                      mean square of row o (the rms^2)
//   s_n       = s / sqrt(mean(s^2))                            scalar over the whole batch tensor
//   d[b, o]   = rsqrt( sum_i q[o, i] s_n[b, i]^2 / r2[o] + eps )   = rsqrt(sum W_b^2 + eps), exact
//   F[b,o,i]  = s_n[b, i] * d[b, o] / sqrt(r2[o])
//   W_b       = K * F[..., None, None]                         the only weight-sized pass
// For N = 1, q is computed on the shared kernel and the demodulation sum is a [B, Cin] x [Cin, Cout]
// GEMM. For N > 1 the selected bank K_b = sum_i alpha_{b,i} K_i is itself one GEMM
// [B, N] x [N, Cout Cin k^2], then one square-and-sum gives q [B, Cout, Cin]. Each step is a
// registered differentiable op, so the backward (and R1's double backward) follows automatically and
// also only makes a few weight-sized passes. In real arithmetic this equals the released code's
// sequence exactly; in f32 the two differ by rounding only (tests/test_modconv.cpp).
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
// grouped: weight [B*Cin, Cout, k, k] = W_b transposed in its two channel dims. We build W_b
// directly in that layout (the factor F and K are permuted views), so no transpose copy is made.
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

Dims range_dims(int64_t from, int64_t to) {
  Dims d;
  for (int64_t i = from; i < to; ++i) d.push_back(i);
  return d;
}

// The factors of Note [modulation without weight-sized temporaries].
// kernel: [Cout, Cin, *ks] (shared) or [B, Cout, Cin, *ks] (batched); styles [B, Cin].
// Returns F [B, Cout, Cin] (demodulate) or [B, 1, Cin] (not), such that W_b = kernel * F[..., ks].
Tensor modulation_factor(const Tensor& kernel, const Tensor& styles, bool batched, bool demodulate, double gain,
                         double eps) {
  if (!demodulate) return unsqueeze(mul(styles, gain), 1);  // [B, 1, Cin]
  const int64_t lead = batched ? 1 : 0;                     // index of Cout
  const int64_t cin = kernel.size(lead + 1);
  int64_t taps = 1;
  for (int64_t d = lead + 2; d < kernel.dim(); ++d) taps *= kernel.size(d);
  // q [(B,) Cout, Cin]: sum of squares over the taps (the kernel itself when there are none).
  const Tensor q = kernel.dim() > lead + 2 ? sum(square(kernel), range_dims(lead + 2, kernel.dim())) : square(kernel);
  const Tensor r2 = div(sum(q, {lead + 1}, true), double(cin * taps));  // [(B,) Cout, 1]
  const Tensor sn = mul(styles, rsqrt(mean(square(styles))));            // [B, Cin]
  const Tensor sn2 = square(sn);
  // t[b, o] = sum_i q[o, i] sn[b, i]^2
  Tensor t = batched ? squeeze(bmm(q, unsqueeze(sn2, 2)), 2)  // [B, Cout, Cin] x [B, Cin, 1]
                     : matmul(sn2, transpose(q, 0, 1));        // [B, Cin] x [Cin, Cout]
  const Tensor r2b = batched ? squeeze(r2, 2) : unsqueeze(squeeze(r2, 1), 0);  // [B or 1, Cout]
  const Tensor d = rsqrt(add(div(t, r2b), eps));                                // [B, Cout]
  const Tensor row = mul(d, rsqrt(r2b));                                        // d / rms  [B, Cout]
  return mul(unsqueeze(row, 2), unsqueeze(sn, 1));                              // [B, Cout, Cin]
}

// W = kernel * F, broadcast over the taps. `transposed`: produce [B, Cin, Cout, *ks] instead of
// [B, Cout, Cin, *ks] (for conv_transpose2d), by permuting both operands (views) before the product.
Tensor apply_factor(const Tensor& kernel, const Tensor& factor, bool batched, bool transposed) {
  Tensor k = batched ? kernel : unsqueeze(kernel, 0);  // [1 or B, Cout, Cin, *ks]
  Tensor f = factor;                                   // [B, Cout or 1, Cin]
  for (int64_t d = 3; d < k.dim(); ++d) f = unsqueeze(f, -1);
  if (transposed) {
    k = transpose(k, 1, 2);
    f = transpose(f, 1, 2);
  }
  return mul(k, f);
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
  return apply_factor(weight, modulation_factor(weight, styles, false, demodulate, weight_gain, eps), false, false);
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
  // y_b = x_b W_b^T. W_b^T [B, Cin, Cout] is the transposed layout of apply_factor, so the bmm
  // reads a contiguous operand.
  const Tensor f = modulation_factor(weight, styles, false, demodulate, weight_gain, eps);
  const Tensor wt = apply_factor(weight, f, false, true);  // [B, Cin, Cout]
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
  const Tensor f = modulation_factor(kernel, style.forward(w), batched, config.demodulate, weight_gain, config.eps);
  return apply_factor(kernel, f, batched, false);
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
  const Tensor factor = modulation_factor(kernel, style.forward(w), batched, c.demodulate, weight_gain, c.eps);
  const Tensor xg = reshape(x, {1, B * c.in_channels, H, W});  // a view: batch folded into channels
  Tensor y;
  if (!c.upsample) {
    const Tensor wg = reshape(apply_factor(kernel, factor, batched, false), {B * c.out_channels, c.in_channels, k, k});
    if (mtm) {
      y = mtm->conv(x, w, wg, k / 2);
    } else if (k == 1) {
      y = conv1x1(x, wg);
    } else {
      y = conv2d(xg, wg, Tensor(), Conv2dParams::make(1, k / 2, 1, B));
    }
  } else if (k == 1) {
    y = upsample2d(conv1x1(x, apply_factor(kernel, factor, batched, false)));
  } else {
    // Note [fused upsampling padding].
    const int64_t p0 = k / 2 + 2, p1 = k / 2 + 1;
    const int64_t px0 = p0 - (k - 1), px1 = p1 - (k - 2);
    const int64_t pt = std::max<int64_t>(std::min(-px0, -px1), 0);
    const Tensor wt = reshape(apply_factor(kernel, factor, batched, true), {B * c.in_channels, c.out_channels, k, k});
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
