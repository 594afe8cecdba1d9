// adamw.h: AdamW over a ParameterStore's flat buffers (Loshchilov & Hutter, "Decoupled Weight
// Decay Regularization", Algorithm 2).
//
// For every element, with g the gradient, step t (1-based), learning rate lr times the
// parameter's lr_scale:
//   p <- p - lr * wd * p                       (decoupled decay, parameters with weight_decay only)
//   m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
// One loop over the flat buffers (DESIGN.md section 5); m and v are flat buffers too
// (Kind::optimizer_state). Defaults are GAN defaults: b1 = 0, b2 = 0.99 (StyleGAN2, GigaGAN).
#pragma once
#include <functional>
#include <string>

#include "nn/module.h"

namespace engine::nn {

struct AdamWOptions {
  double lr = 0.0025;
  double beta1 = 0.0;
  double beta2 = 0.99;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  // `lr_scale(name)` gives a per-parameter learning-rate multiplier (default 1 for all).
  AdamW(ParameterStore& store, AdamWOptions options,
        std::function<double(const std::string&)> lr_scale = nullptr);
  void step();  // uses store.flat_grads(); does not zero them
  int64_t steps() const { return step_; }
  void set_steps(int64_t s) { step_ = s; }
  const Tensor& exp_avg() const { return m_; }
  const Tensor& exp_avg_sq() const { return v_; }
  AdamWOptions& options() { return options_; }

 private:
  struct Segment {
    int64_t offset, numel;
    double lr_scale;
    bool decay;
  };
  ParameterStore& store_;
  AdamWOptions options_;
  std::vector<Segment> segments_;
  Tensor m_, v_;
  int64_t step_ = 0;
};

}  // namespace engine::nn
