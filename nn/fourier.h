// fourier.h: the Fourier-feature input of the 4x4 stage (docs/aurora-spec.md section 2 "Input at
// 4x4"; StyleGAN3's SynthesisInput, Karras et al. 2021 section 3.2 / appendix F).
//
// Buffers, drawn at init (Init::custom, counter-based stream, so independent of rank and order):
//   freqs [C, 2]:  f = n / (|n| * exp(|n|^2)^(1/4)) * bandwidth,  n ~ N(0, I_2)
//                  (a direction uniform on the circle, radius exp(-|n|^2/4) * bandwidth, in (0, bandwidth])
//   phases [C]:    U[-0.5, 0.5)
//   transform [3, 3]: identity; StyleGAN3's user-specified inverse transform of the output image.
// Parameters: weight [C, C] ~ N(0, 1) (used as weight / sqrt(C)); affine: EqualLinear w_dim -> 4
// with weight 0 and bias [1, 0, 0, 0] (so t = (1, 0, 0, 0): no rotation or translation at init).
//
// Forward, w [B, w_dim] -> x [B, C, size, size]:
//   t = affine(w);  t <- t / |(t_0, t_1)|          (r_c, r_s, t_x, t_y): rotation cos/sin, translation
//   M = M_r M_t T,  M_r = [[r_c, -r_s, 0], [r_s, r_c, 0], [0, 0, 1]],  M_t = [[1, 0, -t_x], [0, 1, -t_y], [0, 0, 1]]
//   phases_b = phases + freqs M[:2, 2]              freqs_b = freqs M[:2, :2]          [B, C(, 2)]
//   grid: pixel centres of a size x size image in [-1, 1] (affine_grid, align_corners = False),
//         scaled by 0.5 size / sampling_rate:  g_j = ((2j + 1)/size - 1) * size / (2 sampling_rate)
//         (x = column coordinate, y = row coordinate)
//   x[b, c, i, j] = sin(2 pi (g_j freqs_b[c, 0] + g_i freqs_b[c, 1] + phases_b[c]))
//   out = (weight / sqrt(C)) x  (channel mixing, a [C, C] x [C, size^2] GEMM per sample)
// No amplitude damping (the released code comments it out; with T = identity every frequency is
// already inside the band). Released: C = 1600, size 4, sampling rate 4, bandwidth 1.
// Names and registration order as the released FourierInputLayer: weight, affine.{weight, bias},
// buffers transform, freqs, phases.
#pragma once
#include "nn/layers.h"
#include "nn/module.h"

namespace engine::nn {

struct FourierConfig {
  int64_t w_dim = 0;
  int64_t channels = 0;
  int64_t size = 4;
  double sampling_rate = 4.0;
  double bandwidth = 1.0;
};

class FourierFeatures : public Module {
 public:
  explicit FourierFeatures(const FourierConfig& config);
  Tensor forward(const Tensor& w) const;  // w [B, w_dim] -> [B, C, size, size]

  FourierConfig config;
  Parameter& weight;    // [C, C]
  EqualLinear& affine;  // w -> (r_c, r_s, t_x, t_y)
  Buffer& transform;    // [3, 3]
  Buffer& freqs;        // [C, 2]
  Buffer& phases;       // [C]
};

}  // namespace engine::nn
