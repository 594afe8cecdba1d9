// discriminator.h: Aurora's discriminator, GigaGAN's multi-scale input / multi-scale output
// (MS-I/O) discriminator conditioned on the global text token t_D (docs/aurora-spec.md section
// 8b; Aurora "directly inherits GigaGAN's architecture", section 8a; GigaGAN, Kang et al. 2023,
// section 3.3 and Fig. 4).
//
// Inputs: the image pyramid x_0..x_{L-1} at R, R/2, ..., 4 px (the generator's img_r for fakes,
// resized reals for reals) and t_D [B, text_dim] (the global text embedding; the text encoder is
// run by the caller). Geometry and channels come from DiscriminatorConfig (aurora/config.h).
//
//   c            = TextMLP(t_D)                                  (nn/disc_heads.h)
//   phi          = levels 0..L-1; level k: entry res R/2^k -> exit res R/2^(k+1) (last: 4 -> 1)
//                  [Attn] + StyleGAN2 residual down block            (nn/disc_blocks.h)
//   phi_{i->j}   = fromRGB_i, then levels i, i+1, ..., j
//   D_ij(x, t)   = mean_pixels( psi_j(phi_{i->j}(x_i), c) + Conv1x1_j(phi_{i->j}(x_i)) )
//                  for every entry i <= exit j: L(L+1)/2 predictions (15 for R = 64)
// Each D_ij is a logit [B]; losses (non-saturating GAN, matching-aware, R1) are summed over them
// by the caller (spec: V_MS-I/O = sum_{i<j} V(G_i, D_ij)).
//
// Note [paths batched along the batch dim]: the L paths phi_{i->.} share every weight of the
// levels they cross (phi_{i->j} is a sub-network of one phi), so at level k the features of
// paths 0..k-1 (coming out of level k-1) and the fresh fromRGB_k(x_k) are concatenated along the
// batch dim -- rows [i*B, (i+1)*B) belong to path i -- and level k and predictor k run ONCE on
// (k+1)*B rows. Level k therefore costs one large conv instead of k+1 small ones, and predictor
// k's modulation broadcasts c over the paths by a view (nn/disc_modconv.h). The result is
// identical to running the paths separately (the PyTorch reference does that).
//
// Parameter names (PyTorch state_dict convention; no released D exists, spec section 12):
//   text.fc{k}.{weight,bias}
//   b{r}.fromrgb.*, b{r}.attn.*, b{r}.conv0.*, b{r}.conv1.*, b{r}.skip.weight   (r: entry res)
//   pred{r}.psi{k}.{weight,bias,style.weight,style.bias}, pred{r}.skip.weight     (r: exit res)
// Presets (configs/*.json; the spec gives no D channel counts, section 12):
//   paper64  channels 64:640, 32:1280, 16..1:1920; attention at 32, 16, 8 (head dim 64, i.e. 20
//            and 30 heads); t_D 768 (CLIP ViT-L/14 width); text MLP 2 x 512; psi 4 layers.
//            378,778,629 parameters (GigaGAN T2I-64's D: 381.4 M): text 0.66 M; levels b64 11.9 M,
//            b32 44.2 M, b16 81.1 M, b8 81.1 M, b4 92.2 M; predictors pred32 7.5 M, pred16..pred1
//            15.0 M each. The channels follow StyleGAN2's doubling (640 -> 1280) then a cap, the
//            cap chosen so the total lands within 1% of 381.4 M.
//   tiny16   16 px, channels 32/64, 323,555 parameters;  tiny32  32 px, channels 32..128,
//            1,359,780 parameters (CPU demos, same architecture).
// Everything is made of differentiable ops, so R1 (Note [R1 double backward], autograd/engine.h:
// grad of sum over all D_ij w.r.t. the pyramid images, create_graph, then backward to the
// weights) works through it.
#pragma once
#include <vector>

#include "aurora/config.h"
#include "nn/disc_blocks.h"
#include "nn/disc_heads.h"
#include "nn/module.h"

namespace engine::aurora {

struct DiscPrediction {
  int64_t entry = 0;             // i: pyramid level the image entered at (0 = largest)
  int64_t exit = 0;              // j >= i: level after which the prediction is made
  int64_t entry_resolution = 0;  // R / 2^i
  int64_t exit_resolution = 0;   // resolution of the logit map that was averaged
  Tensor logits;                 // [B]
};

class Discriminator : public nn::Module {
 public:
  explicit Discriminator(const DiscriminatorConfig& config);  // meta: nothing allocated

  // pyramid[k]: [B, image_channels, R/2^k, R/2^k] for k = 0..L-1; t_D [B, text_dim].
  // Returns the L(L+1)/2 predictions sorted by (entry, exit).
  std::vector<DiscPrediction> forward(const TensorList& pyramid, const Tensor& t_D) const;

  // The text MLP's output c [B, cond_dim] (exposed for tests and for reuse across the real,
  // fake and mismatched passes of one step).
  Tensor condition(const Tensor& t_D) const { return text.forward(t_D); }
  // forward() with c given instead of t_D.
  std::vector<DiscPrediction> forward_with_condition(const TensorList& pyramid, const Tensor& c) const;

  DiscriminatorConfig config;
  nn::DiscTextMLP& text;
  std::vector<nn::DiscLevel*> levels;          // levels[k]: entry resolution R / 2^k
  std::vector<nn::DiscPredictor*> predictors;  // predictors[k]: exit resolution of level k

 private:
  std::vector<DiscPrediction> run(const TensorList& pyramid, const Tensor& c) const;
};

// sum_ij sum_b D_ij: the scalar whose gradient w.r.t. the pyramid R1 penalises.
Tensor sum_of_predictions(const std::vector<DiscPrediction>& predictions);

// A pyramid from one image x [B, C, R, R]: x, then repeated 2x2 box averaging (area resize by
// exactly 1/2) down to 4 px; `levels` entries. This is how reals are resized for D. The box
// filter needs no padding, so border pixels are treated like every other pixel: a padded FIR
// would darken the borders of the reals only (the generator's img_r has no such border), which
// D could learn to use. Differentiable, so R1 may also be taken w.r.t. x alone.
TensorList make_image_pyramid(const Tensor& x, int64_t levels);

}  // namespace engine::aurora
