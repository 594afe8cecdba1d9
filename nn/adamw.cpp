// adamw.cpp: the fused AdamW loop over the flat parameter, gradient and moment buffers.
#include "nn/adamw.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "tensor/dispatch.h"
#include "tensor/memory/profiler.h"

namespace engine::nn {

AdamW::AdamW(ParameterStore& store, AdamWOptions options, std::function<double(const std::string&)> lr_scale)
    : store_(store), options_(options) {
  ENGINE_CHECK(store.flat_params().defined(), "AdamW: the parameter store is not materialized");
  ENGINE_CHECK(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1,
               "AdamW: betas must be in [0, 1), got ({}, {})", options.beta1, options.beta2);
  for (auto& [name, p] : store.parameters())
    segments_.push_back({p->offset, p->shape.product(), lr_scale ? lr_scale(name) : 1.0, p->weight_decay});
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
  dispatch_floating(flat.dtype(), "adamw", [&](auto zero) {
    using T = decltype(zero);
    T* p = flat.data<T>();
    const T* g = store_.flat_grads().data<T>();
    T* m = m_.data<T>();
    T* v = v_.data<T>();
    for (const Segment& s : segments_) {
      const double lr = options_.lr * s.lr_scale;
      const double decay = s.decay ? 1.0 - lr * wd : 1.0;
      const double step_size = lr / c1;
      const double inv_c2 = 1.0 / c2;
#pragma omp parallel for schedule(static) if (s.numel >= 16384)
      for (int64_t i = s.offset; i < s.offset + s.numel; ++i) {
        const double gi = double(g[i]);
        const double mi = b1 * double(m[i]) + (1 - b1) * gi;
        const double vi = b2 * double(v[i]) + (1 - b2) * gi * gi;
        m[i] = T(mi);
        v[i] = T(vi);
        p[i] = T(double(p[i]) * decay - step_size * mi / (std::sqrt(vi * inv_c2) + eps));
      }
    }
  });
  bump_version(flat, "adamw");
}

}  // namespace engine::nn
