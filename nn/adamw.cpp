// adamw.cpp: the fused AdamW update over the flat parameter, gradient and moment buffers: one
// adamw_update_ (tensor/ops_fused.cpp; body tensor/kernels/adamw.h) per run of parameters sharing
// a learning-rate scale and weight-decay flag, on the CPU or on the GPU where the buffers live.
#include "nn/adamw.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

namespace engine::nn {

AdamW::AdamW(ParameterStore& store, AdamWOptions options, std::function<double(const std::string&)> lr_scale)
    : store_(store), options_(options) {
  ENGINE_CHECK(store.flat_params().defined(), "AdamW: the parameter store is not materialized");
  ENGINE_CHECK(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1,
               "AdamW: betas must be in [0, 1), got ({}, {})", options.beta1, options.beta2);
  // Adjacent parameters with the same lr scale and decay flag form one segment: the update of an
  // element does not depend on the segmentation, and fewer segments mean fewer loops (launches).
  for (auto& [name, p] : store.parameters()) {
    const Segment s{p->offset, p->shape.product(), lr_scale ? lr_scale(name) : 1.0, p->weight_decay};
    if (!segments_.empty()) {
      Segment& last = segments_.back();
      if (last.offset + last.numel == s.offset && last.lr_scale == s.lr_scale && last.decay == s.decay) {
        last.numel += s.numel;
        continue;
      }
    }
    segments_.push_back(s);
  }
  memory::PassScope pass(memory::Pass::optim);
  TensorOptions o{store.flat_params().dtype(), store.flat_params().device(), memory::Kind::optimizer_state};
  m_ = zeros(store.flat_params().sizes(), o);
  v_ = zeros(store.flat_params().sizes(), o);
}

void AdamW::step() {
  memory::PassScope pass(memory::Pass::optim);
  memory::OpScope scope("adamw");
  autograd::NoGradGuard no_grad;
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2, eps = options_.eps, wd = options_.weight_decay;
  const double c1 = 1.0 - std::pow(b1, double(step_)), c2 = 1.0 - std::pow(b2, double(step_));
  const Tensor& flat = store_.flat_params();
  for (const Segment& s : segments_) {
    const double lr = options_.lr * s.lr_scale;
    const AdamWScalars k{b1, b2, eps, s.decay ? 1.0 - lr * wd : 1.0, lr / c1, 1.0 / c2};
    adamw_update_(flat, store_.flat_grads(), m_, v_, s.offset, s.numel, k);
  }
  bump_version(flat, "adamw");
}

}  // namespace engine::nn
