// modconv.h: Aurora's adaptive modulated convolution (docs/aurora-spec.md section 3; GigaGAN's
// sample-adaptive kernel selection, Kang et al. 2023 eq. 1; StyleGAN2's modulation and
// demodulation, Karras et al. 2020 eq. 1-3; fused upsampling as StyleGAN2's conv2d_resample, spec
// section 2 "Upsampling"), and its 1x1 token-layout form ModulatedLinear used by the attention
// output projection (spec 5.1) and the MoE router (spec 6).
//
// ---- ModulatedConv2d: x [B, Cin, H, W], w [B, w_dim] -> y [B, Cout, H', W'] --------------------
// Parameters: a kernel bank K [N, Cout, Cin, k, k] stored N(0, 1/lr_mul) (Note [equalized lr],
// nn/layers.h), N = num_kernels (N = 1: one plain kernel, no selection layer).
//   1. selection (N > 1 only):  alpha = softmax(A_f w + b_f)  [B, N]   (filter_weight, b_f init 1)
//                               K_b = sum_i alpha_{b,i} K_i            [B, Cout, Cin, k, k]
//   2. style:                   s = A_s w + b_s                 [B, Cin] (style, b_s init 1)
//   3. demodulate = true (every 3x3 conv):
//        K_b <- K_b / rms_{Cin,k,k}(K_b)     per sample and output channel (pre-normalisation)
//        s   <- s / rms(s)                   ONE scalar over the whole [B, Cin] tensor
//        W_b = K_b * s_b[None, :, None, None]
//        W_b <- W_b * rsqrt(sum_{Cin,k,k} W_b^2 + eps)   (demodulation, eps = 1e-8)
//      Both pre-normalisations cancel in the demodulation (up to eps); they keep the magnitudes
//      O(1) (fp16-safe), and we keep them because the released model computes them.
//   4. demodulate = false (ToRGB):  W_b = K_b * s_b * weight_gain,  weight_gain = lr_mul/sqrt(Cin k^2)
//   5. convolution, batch-grouped (StyleGAN2's fused modconv): x viewed as [1, B*Cin, H, W], the
//      weights as [B*Cout, Cin, k, k], groups = B; padding k/2. For k = 1 (ToRGB) the same thing is
//      computed as one bmm W_b [Cout, Cin] x x_b [Cin, H*W] on views (no im2col, no copies).
//      upsample = true (Note [fused upsampling padding], modconv.cpp):
//        k > 1:  conv_transpose2d(stride 2, padding 0) with the weights as-is (no flip, as
//                StyleGAN2-ADA with flip_weight=False), then upfirdn2d(FIR [1,3,3,1] separable,
//                normalised to sum 1, gain 4, pad (1, 1, 1, 1)): H' = 2H.
//        k = 1:  grouped 1x1 conv, then upfirdn2d(up 2, pad (2, 1, 2, 1), gain 4).
//   6. y = act(conv + bias * lr_mul): act = leaky_relu(0.2) * sqrt(2) or linear.
// Names and registration order as the released AdaptiveModulateConvLayer (zhujiapeng/Aurora):
//   weight [N, Cout, Cin, k, k], bias [Cout] (0), style.{weight [Cin, w_dim], bias [Cin]},
//   filter_weight.{weight [N, w_dim], bias [N]} (N > 1 only). The released module also stores the
//   FIR as a buffer `filter` (4x4); we do not (it is a constant, not learned): a checkpoint
//   converter drops it.
//
// MTM hook (Note [MTM hook]): the main conv of a non-upsampling 3x3 ModulatedConv2d can be replaced
// by a modulated deformable conv (spec section 4). Another module implements ModConvMTM and is
// attached with attach_mtm<M>(...) (registered as child "mtm", before materialize). forward()
// then calls mtm->conv(x, w, grouped_weight, padding) instead of the grouped conv2d; bias and the
// activation stay in ModulatedConv2d.
//
// ---- ModulatedLinear: tokens x [B, T, Cin], w [B, w_dim] -> y [B, T, Cout] ------------------------
// The same math with k = 1 and N = 1, written for the token layout with one bmm:
//   y_b = act(x_b W_b^T + bias * lr_mul),   W_b [Cout, Cin] modulated (+ demodulated) as above.
// Parameters (registration order weight, bias, style; the interface nn/moe.h's router and
// nn/attention.h's proj_out already use):
//   weight [Cout, Cin] N(0, 1/lr_mul), bias [Cout] (0; optional), style.{weight, bias} (bias init 1).
// (The released checkpoint stores this weight as [1, Cout, Cin, 1, 1]: a converter reshapes it.)
// The functional form modulated_linear() takes explicit tensors, for callers that own parameters.
#pragma once
#include <cstdint>
#include <memory>
#include <utility>

#include "nn/layers.h"
#include "nn/module.h"
#include "tensor/ops.h"

namespace engine::nn {

// ---- Functional pieces (all differentiable ops; double backward works through them) ---------

// The per-sample modulated kernel. weight [Cout, Cin, ...] (one shared kernel) or
// [B, Cout, Cin, ...] (already selected per sample); styles [B, Cin] (the raw A_s w + b_s).
// demodulate: pre-normalise weight rows and styles, modulate, demodulate with rsqrt(sum W^2 + eps)
// over all dims after Cout. Otherwise W = weight * styles * weight_gain (weight_gain ignored when
// demodulating). Returns [B, Cout, Cin, ...].
Tensor modulate_weight(const Tensor& weight, const Tensor& styles, bool demodulate, double weight_gain = 1.0,
                       double eps = 1e-8);

// Token-layout modulated linear: x [B, T, Cin], styles [B, Cin], weight [Cout, Cin],
// bias [Cout] (optional, scaled by bias_gain) -> [B, T, Cout] = act(x W_b^T + bias * bias_gain),
// with W_b = modulate_weight(weight, styles, demodulate, weight_gain, eps). One bmm for the batch.
Tensor modulated_linear(const Tensor& x, const Tensor& styles, const Tensor& weight, const Tensor& bias,
                        bool demodulate = true, double weight_gain = 1.0, double bias_gain = 1.0,
                        Activation act = Activation::linear, double eps = 1e-8);

// ---- ModulatedLinear ------------------------------------------------------------------------

class ModulatedLinear : public Module {
 public:
  // Attention proj_out: ModulatedLinear(inner, width, w_dim)               (linear, with bias)
  // MoE router:         ModulatedLinear(C, E, w_dim, true, Activation::lrelu)
  ModulatedLinear(int64_t in_features, int64_t out_features, int64_t w_dim, bool bias = true,
                  Activation act = Activation::linear, double lr_mul = 1.0, bool demodulate = true,
                  double eps = 1e-8);
  // x [B, T, in], w [B, w_dim] -> [B, T, out]. Any float dtype; x and w share it.
  Tensor forward(const Tensor& x, const Tensor& w) const;
  // The per-sample weight W_b [B, out, in] (for tests and inspection).
  Tensor modulated_weight(const Tensor& w) const;

  int64_t in_features, out_features;
  Activation activation;
  double lr_mul, weight_gain, eps;
  bool demodulate;
  Parameter& weight;         // [out, in]
  Parameter* bias = nullptr;  // [out]
  EqualLinear& style;        // w -> s [B, in], bias initialised to 1
};

// ---- ModulatedConv2d ------------------------------------------------------------------------

struct ModConvConfig {
  int64_t in_channels = 0, out_channels = 0, kernel_size = 3, w_dim = 0;
  int64_t num_kernels = 1;  // N: adaptive kernel bank size (spec 3.6: {4:1, 8:1, 16:2, 32:4, 64:8})
  bool demodulate = true;
  bool upsample = false;     // fused 2x upsampling (spec 2 "Upsampling")
  bool bias = true;
  Activation activation = Activation::lrelu;
  double lr_mul = 1.0;
  double eps = 1e-8;
};

// Note [MTM hook]: the interface of a module that replaces ModulatedConv2d's main convolution by a
// modulated deformable convolution (spec section 4). x [B, Cin, H, W] is the layer input, w
// [B, w_dim] the latent, grouped_weight [B*Cout, Cin, k, k] the per-sample (demodulated) kernel
// already in the batch-grouped layout; return the conv result [B, Cout, H, W] (before bias and
// activation). Only called for non-upsampling layers (attach_mtm rejects upsample = true).
class ModConvMTM : public Module {
 public:
  using Module::Module;
  virtual Tensor conv(const Tensor& x, const Tensor& w, const Tensor& grouped_weight, int64_t padding) const = 0;
};

class ModulatedConv2d : public Module {
 public:
  explicit ModulatedConv2d(const ModConvConfig& config);

  // x [B, Cin, H, W], w [B, w_dim] -> [B, Cout, H', W'] (H' = 2H when upsampling).
  Tensor forward(const Tensor& x, const Tensor& w) const;

  // The pieces of forward:
  // alpha = softmax(A_f w + b_f) [B, N] (N > 1 only; undefined otherwise).
  Tensor kernel_weights(const Tensor& w) const;
  // The selected bank K_b [B, Cout, Cin, k, k] (N > 1) or the single kernel [Cout, Cin, k, k].
  Tensor selected_kernel(const Tensor& w) const;
  // The per-sample weight W_b [B, Cout, Cin, k, k] (selection, modulation, demodulation).
  Tensor modulated_weight(const Tensor& w) const;

  // Attach the MTM module (Note [MTM hook]); registered as child "mtm". Call before materialize.
  template <typename M, typename... Args>
  M& attach_mtm(Args&&... args) {
    check_mtm_allowed();
    M& m = register_module<M>("mtm", std::forward<Args>(args)...);
    mtm = &m;
    return m;
  }

  ModConvConfig config;
  double weight_gain;  // lr_mul / sqrt(Cin k^2): used by the non-demodulated path
  Parameter& weight;   // [N, Cout, Cin, k, k]
  Parameter* bias = nullptr;            // [Cout]
  EqualLinear& style;                   // w -> [B, Cin], bias init 1
  EqualLinear* filter_weight = nullptr;  // w -> [B, N], bias init 1 (N > 1)
  ModConvMTM* mtm = nullptr;

 private:
  void check_mtm_allowed() const;
};

// ---- Fixed FIR helpers shared with ResConv and the ToRGB skip sum ---------------------------

// The 1-D FIR [1, 3, 3, 1] / 8 (separable, so the 2-D filter is the outer product normalised to
// sum 1, as StyleGAN2's setup_filter), in the given dtype and device.
Tensor fir_filter_1331(DType dtype, Device device);
// StyleGAN2's upsample2d: upfirdn2d(x, f, up 2, pad (2, 1, 2, 1), gain 4): [.., H, W] -> [.., 2H, 2W].
Tensor upsample2d(const Tensor& x);

}  // namespace engine::nn
