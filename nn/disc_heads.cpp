// disc_heads.cpp: D's text MLP and multi-scale output predictors (see disc_heads.h).
#include "nn/disc_heads.h"

#include <string>

namespace engine::nn {

DiscTextMLP::DiscTextMLP(int64_t tdim, int64_t cdim, int64_t layers) : Module("DiscTextMLP"), text_dim(tdim), cond_dim(cdim) {
  ENGINE_CHECK(layers >= 1, "DiscTextMLP: needs at least one layer, got {}", layers);
  for (int64_t k = 0; k < layers; ++k) {
    fcs.push_back(&register_module<EqualLinear>("fc" + std::to_string(k), k == 0 ? tdim : cdim, cdim, true, 0.0, 1.0,
                                                Activation::lrelu));
  }
}

Tensor DiscTextMLP::forward(const Tensor& t) const {
  ENGINE_CHECK(t.dim() == 2 && t.size(1) == text_dim, "DiscTextMLP: expected t_D [B, {}], got {}", text_dim,
               t.sizes().str());
  // PixelNorm over the feature dim.
  Tensor c = mul(t, rsqrt(add(mean(square(t), {1}, /*keepdim=*/true), 1e-8)));
  for (const EqualLinear* fc : fcs) c = fc->forward(c);
  return c;
}

DiscPredictor::DiscPredictor(int64_t c, int64_t cond_dim, int64_t layers) : Module("DiscPredictor"), channels(c) {
  ENGINE_CHECK(layers >= 1, "DiscPredictor: needs at least one layer, got {}", layers);
  for (int64_t k = 0; k < layers; ++k) {
    const bool last = k + 1 == layers;
    psi.push_back(&register_module<DiscModulatedConv1x1>("psi" + std::to_string(k), c, last ? 1 : c, cond_dim,
                                                         /*demodulate=*/!last,
                                                         last ? Activation::linear : Activation::lrelu));
  }
  skip = &register_module<EqualConv2d>("skip", c, int64_t(1), int64_t(1), /*bias=*/false);
}

Tensor DiscPredictor::logit_map(const Tensor& h, const Tensor& c) const {
  Tensor m = h;
  for (const DiscModulatedConv1x1* layer : psi) m = layer->forward(m, c);
  return add(m, skip->forward(h));
}

Tensor DiscPredictor::forward(const Tensor& h, const Tensor& c) const {
  return mean(logit_map(h, c), {1, 2, 3});
}

}  // namespace engine::nn
