// ema.h: the exponential moving average of the generator's weights (Karras et al. 2018, "G_ema").
//
// After each generator step: ema <- beta * ema + (1 - beta) * params, over the flat buffers, with
// beta = 0.5 ** (batch_size / half_life_images) (StyleGAN2's ema_kimg convention: the half-life is
// measured in images, so beta does not depend on the batch size chosen). Buffers (w_avg, ...) are
// copied, not averaged.
#pragma once
#include "nn/module.h"

namespace engine::nn {

class Ema {
 public:
  // `ema_store` must be materialized from a module of identical structure.
  Ema(ParameterStore& source, ParameterStore& ema_store);
  static double beta_for(double batch_size, double half_life_images);
  void update(double beta);
  void copy_buffers(Module& source, Module& ema_module);

 private:
  ParameterStore& source_;
  ParameterStore& ema_;
};

}  // namespace engine::nn
