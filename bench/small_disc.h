// small_disc.h: the small convolutional discriminator used by the R1 demo, the core bench and the
// end-to-end R1 parity test. StyleGAN2-like blocks:
//   conv3x3 -> leaky_relu(0.2) * sqrt(2) -> FIR downsample x2 ([1,3,3,1], StyleGAN2 downsample2d)
//   (twice), then flatten -> linear -> one logit per image.
// R1 (Note [R1 double backward], autograd/engine.h):
//   g = grad(sum(D(x)), {x}, create_graph) ; r1 = mean_b(sum g^2) ; backward(r1) to the weights.
#pragma once
#include <cmath>

#include "autograd/engine.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

namespace engine::bench {

struct SmallDisc {
  Tensor w1, b1, w2, b2, wl, bl, fir;
  int64_t c0 = 3, c1 = 8, c2 = 16, res = 16;

  // Random init (N(0,1) scaled by 1/sqrt(fan_in), as equalized learning rate would at runtime).
  static SmallDisc make(int64_t c0, int64_t c1, int64_t c2, int64_t res, uint64_t seed, DType t = DType::f32) {
    SmallDisc d;
    d.c0 = c0; d.c1 = c1; d.c2 = c2; d.res = res;
    Generator gen(seed);
    auto param = [&](Dims shape, double scale) {
      Tensor p = mul(randn(shape, gen, opts(t)), scale).detach();
      return p.requires_grad_(true);
    };
    d.w1 = param({c1, c0, 3, 3}, 1.0 / std::sqrt(double(c0 * 9)));
    d.b1 = param({c1}, 0.1);
    d.w2 = param({c2, c1, 3, 3}, 1.0 / std::sqrt(double(c1 * 9)));
    d.b2 = param({c2}, 0.1);
    const int64_t flat = c2 * (res / 4) * (res / 4);
    d.wl = param({1, flat}, 1.0 / std::sqrt(double(flat)));
    d.bl = param({1}, 0.1);
    d.fir = from_vector({1.0 / 8, 3.0 / 8, 3.0 / 8, 1.0 / 8}, {4}, opts(t));
    return d;
  }

  TensorList params() const { return {w1, b1, w2, b2, wl, bl}; }

  Tensor downsample(const Tensor& x) const {
    UpFirDnParams p;
    p.down_x = p.down_y = 2;
    p.pad_x0 = p.pad_x1 = p.pad_y0 = p.pad_y1 = 1;  // (fw - down + 1) / 2 and (fw - down) / 2
    return upfirdn2d(x, fir, p);
  }

  Tensor forward(const Tensor& x) const {
    const double gain = std::sqrt(2.0);
    memory::ModuleScope d_scope("D");
    Tensor h;
    {
      memory::ModuleScope scope("b0");
      h = downsample(leaky_relu(conv2d(x, w1, b1, Conv2dParams::make(1, 1)), 0.2, gain));
    }
    {
      memory::ModuleScope scope("b1");
      h = downsample(leaky_relu(conv2d(h, w2, b2, Conv2dParams::make(1, 1)), 0.2, gain));
    }
    memory::ModuleScope scope("out");
    return linear(flatten(h, 1), wl, bl);  // [N, 1]
  }

  // One lazy-R1 step: returns r1 and leaves the weight gradients in .grad().
  Tensor r1_step(const Tensor& x_real) const {
    Tensor x = x_real.detach().requires_grad_(true);
    Tensor logits = forward(x);
    TensorList g = autograd::grad({sum(logits)}, {x}, {}, /*create_graph=*/true);
    Tensor r1 = mean(sum(mul(g[0], g[0]), {1, 2, 3}));
    autograd::backward(r1);
    return r1;
  }
};

}  // namespace engine::bench
