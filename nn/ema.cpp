// ema.cpp: the generator EMA over flat buffers.
#include "nn/ema.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

namespace engine::nn {

Ema::Ema(ParameterStore& source, ParameterStore& ema_store) : source_(source), ema_(ema_store) {
  ENGINE_CHECK(source.numel() == ema_store.numel() && source.numel() > 0,
               "Ema: the EMA store ({} elements) does not match the source ({} elements)", ema_store.numel(),
               source.numel());
  // The update is two in-place ops on the flat buffers (mul_, add_), run on their device (no
  // host round trip); they must share it.
  ENGINE_CHECK(source.device() == ema_store.device(), "Ema: the EMA store is on {} but the source on {}",
               ema_store.device().str(), source.device().str());
}

double Ema::beta_for(double batch_size, double half_life_images) {
  ENGINE_CHECK(half_life_images > 0, "Ema: half-life must be positive, got {}", half_life_images);
  return std::pow(0.5, batch_size / half_life_images);
}

void Ema::update(double beta) {
  memory::PassScope pass(memory::Pass::optim);
  memory::OpScope scope("ema");
  autograd::NoGradGuard no_grad;
  // ema = beta * ema + (1 - beta) * p  ==  ema += (1 - beta) * (p - ema)
  const Tensor& e = ema_.flat_params();
  mul_(e, beta);
  add_(e, source_.flat_params(), 1.0 - beta);
}

void Ema::copy_buffers(Module& source, Module& ema_module) {
  autograd::NoGradGuard no_grad;
  auto a = source.named_buffers(), b = ema_module.named_buffers();
  ENGINE_CHECK(a.size() == b.size(), "Ema: buffer count differs ({} vs {})", a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) copy_(b[i].second->value, a[i].second->value);
}

}  // namespace engine::nn
