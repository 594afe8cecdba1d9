// mapping.cpp: PixelNorm and the mapping network; the math is in mapping.h (spec section 1).
#include "nn/mapping.h"

#include <string>

#include "autograd/grad_mode.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

namespace engine::nn {

Tensor pixel_norm(const Tensor& x, int64_t dim, double eps) {
  return mul(x, rsqrt(add(mean(square(x), {dim}, true), eps)));
}

namespace {
const MappingConfig& checked(const MappingConfig& c) {
  ENGINE_CHECK(c.z_dim > 0 && c.c_dim >= 0 && c.w_dim > 0 && c.hidden > 0 && c.num_layers >= 1 && c.lr_mul > 0,
               "MappingNetwork: z_dim ({}), w_dim ({}), hidden ({}), lr_mul ({}) must be positive, c_dim ({}) >= 0, "
               "num_layers ({}) >= 1",
               c.z_dim, c.w_dim, c.hidden, c.lr_mul, c.c_dim, c.num_layers);
  return c;
}
}  // namespace

MappingNetwork::MappingNetwork(const MappingConfig& c)
    : Module("MappingNetwork"), config(checked(c)), w_avg(register_buffer("w_avg", {c.w_dim}, Init::zeros())) {
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const int64_t in = i == 0 ? c.z_dim + c.c_dim : c.hidden;
    const int64_t out = i == c.num_layers - 1 ? c.w_dim : c.hidden;
    layers.push_back(&register_module<EqualLinear>("dense" + std::to_string(i), in, out, true, 0.0, c.lr_mul,
                                                   Activation::lrelu));
  }
}

Tensor MappingNetwork::forward(const Tensor& z, const Tensor& t_g) const {
  const MappingConfig& c = config;
  ENGINE_CHECK(z.defined() && z.dim() == 2 && z.size(1) == c.z_dim, "MappingNetwork: expected z [B, {}], got {}",
               c.z_dim, z.defined() ? z.sizes().str() : std::string("undefined"));
  Tensor h = pixel_norm(z, 1, c.eps);
  if (c.c_dim > 0) {
    ENGINE_CHECK(t_g.defined() && t_g.dim() == 2 && t_g.size(0) == z.size(0) && t_g.size(1) == c.c_dim,
                 "MappingNetwork: expected t_g [{}, {}], got {}", z.size(0), c.c_dim,
                 t_g.defined() ? t_g.sizes().str() : std::string("undefined"));
    h = cat({h, pixel_norm(t_g, 1, c.eps)}, 1);
  } else {
    ENGINE_CHECK(!t_g.defined(), "MappingNetwork: c_dim = 0 but a condition was given");
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    memory::ModuleScope scope("dense" + std::to_string(i));
    h = layers[i]->forward(h);
  }
  return h;
}

void MappingNetwork::update_w_avg(const Tensor& w, double decay) {
  ENGINE_CHECK(w.defined() && w.dim() == 2 && w.size(1) == config.w_dim,
               "MappingNetwork::update_w_avg: expected w [B, {}], got {}", config.w_dim,
               w.defined() ? w.sizes().str() : std::string("undefined"));
  ENGINE_CHECK(decay >= 0 && decay <= 1, "MappingNetwork::update_w_avg: decay must be in [0, 1], got {}", decay);
  autograd::NoGradGuard no_grad;
  const Tensor m = mean(w.detach().to(w_avg.value.dtype()), {0});  // [w_dim]
  // w_avg = m + decay * (w_avg - m)
  copy_(w_avg.value, add(m, mul(sub(w_avg.value, m), decay)));
}

Tensor MappingNetwork::truncate(const Tensor& w, double psi) const {
  const Tensor avg = w_avg.value.to(w.dtype());
  return add(avg, mul(sub(w, avg), psi));
}

}  // namespace engine::nn
