// mapping.h: PixelNorm and Aurora's mapping network (docs/aurora-spec.md section 1 "Mapping network"
// and "w_avg"; StyleGAN's mapping network, Karras et al. 2019, with equalized lr, Note
// [equalized lr] in nn/layers.h).
//
//   PixelNorm(x) = x * rsqrt(mean_{dim 1}(x^2) + 1e-8)
//   h_0 = concat(PixelNorm(z), PixelNorm(t_g))          [B, z_dim + c_dim]   (c_dim = 0: h_0 = PixelNorm(z))
//   h_i = lrelu(A_i h_{i-1} + b_i) * sqrt(2)           i = 0 .. L-1, every layer (the last too)
//   w   = h_L                                           [B, w_dim]
// EqualLinear layers with lr_mul 0.01 (weights stored N(0, 100), scaled by 0.01/sqrt(fan_in);
// biases stored 0 and scaled by 0.01). Released: z_dim 128, c_dim 1024, hidden 1024, w_dim 1024, L 4.
//
// w_avg [w_dim]: a buffer (not trained) tracking the mean w for truncation (spec 7):
//   update_w_avg(w, decay):  w_avg <- lerp(mean_b w, w_avg, decay) = mean_b w + decay (w_avg - mean_b w)
// (no grad; decay e.g. 0.995, Hammer's default). truncate(w, psi) = lerp(w_avg, w, psi).
//
// Names as the released MappingNetwork: dense0 .. dense{L-1} (.weight, .bias). The released model
// keeps w_avg at the generator's top level (`w_avg`); here it is `<mapping>.w_avg` (a checkpoint
// converter renames it).
#pragma once
#include <vector>

#include "nn/layers.h"
#include "nn/module.h"

namespace engine::nn {

// x * rsqrt(mean(x^2, dim) + eps), differentiable.
Tensor pixel_norm(const Tensor& x, int64_t dim = 1, double eps = 1e-8);

class PixelNorm : public Module {
 public:
  explicit PixelNorm(int64_t dim = 1, double eps = 1e-8) : Module("PixelNorm"), dim(dim), eps(eps) {}
  Tensor forward(const Tensor& x) const { return pixel_norm(x, dim, eps); }
  int64_t dim;
  double eps;
};

struct MappingConfig {
  int64_t z_dim = 128;
  int64_t c_dim = 1024;  // width of the text condition t_g; 0 = unconditional
  int64_t w_dim = 1024;
  int64_t hidden = 1024;
  int64_t num_layers = 4;
  double lr_mul = 0.01;
  double eps = 1e-8;
};

class MappingNetwork : public Module {
 public:
  explicit MappingNetwork(const MappingConfig& config);
  // z [B, z_dim], t_g [B, c_dim] (undefined when c_dim = 0) -> w [B, w_dim].
  Tensor forward(const Tensor& z, const Tensor& t_g = Tensor()) const;
  // No grad: w_avg <- lerp(mean over the batch of w, w_avg, decay).
  void update_w_avg(const Tensor& w, double decay);
  // lerp(w_avg, w, psi) (differentiable in w): the truncation trick.
  Tensor truncate(const Tensor& w, double psi) const;

  MappingConfig config;
  std::vector<EqualLinear*> layers;  // dense0 ..
  Buffer& w_avg;                     // [w_dim], zeros at init
};

}  // namespace engine::nn
