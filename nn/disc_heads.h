// disc_heads.h: the discriminator's text branch and its conditional predictors
// (docs/aurora-spec.md section 8b).
//
// DiscTextMLP -- D's own learned text layers. The spec's GigaGAN D puts learned attention layers
// on top of the frozen CLIP text encoder and uses only the global (EOT) descriptor t_D; here t_D
// arrives already pooled (the caller runs the text encoder), so a token-mixing layer has nothing
// to mix: D's learned layers are an MLP on t_D, like the generator's mapping network:
//   c = lrelu(FC_{n-1}( ... lrelu(FC_0(PixelNorm(t_D))) ... ))       widths text_dim -> cond_dim
// PixelNorm (x / sqrt(mean(x^2) + 1e-8), spec section 1) makes D insensitive to the scale of the
// text features (CLIP's EOT state is not normalised). Names: fc0.{weight,bias}, fc1, ...
//
// DiscPredictor -- the multi-scale output head at one exit resolution j (spec: D_ij =
// psi_j(phi_{i->j}(x_i), t_D) + Conv1x1(phi_{i->j}(x_i))), shared by every entry level i:
//   psi_j: n 1x1 convs modulated by c (nn/disc_modconv.h): the first n-1 are C -> C, demodulated,
//          lrelu; the last is C -> 1, modulated WITHOUT demodulation (demodulating a single output
//          channel would fix its scale, like StyleGAN2's toRGB), linear, with bias.
//   skip:  an unconditional 1x1 conv C -> 1 without bias (psi's last layer has the bias).
//   logit map  m = psi_j(h, c) + skip(h)                         [N, 1, r, r]
//   output     D = mean over the r x r map                       [N]  (GigaGAN averages the map)
// Names: psi0.{weight,bias,style.weight,style.bias}, psi1, ..., skip.weight.
#pragma once
#include <vector>

#include "nn/disc_modconv.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace engine::nn {

class DiscTextMLP : public Module {
 public:
  DiscTextMLP(int64_t text_dim, int64_t cond_dim, int64_t layers);
  Tensor forward(const Tensor& t) const;  // [B, text_dim] -> [B, cond_dim]

  int64_t text_dim, cond_dim;
  std::vector<EqualLinear*> fcs;
};

class DiscPredictor : public Module {
 public:
  DiscPredictor(int64_t channels, int64_t cond_dim, int64_t layers);
  // h [P*B, C, r, r] (rows path-major, sample n % B), c [B, cond_dim] -> [P*B] logits.
  Tensor forward(const Tensor& h, const Tensor& c) const;
  Tensor logit_map(const Tensor& h, const Tensor& c) const;  // [P*B, 1, r, r]

  int64_t channels;
  std::vector<DiscModulatedConv1x1*> psi;
  EqualConv2d* skip = nullptr;
};

}  // namespace engine::nn
