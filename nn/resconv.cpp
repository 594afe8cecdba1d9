// resconv.cpp: the residual conv block; the math is in resconv.h (spec section 2).
#include "nn/resconv.h"

#include "tensor/memory/profiler.h"

namespace engine::nn {

namespace {
const ResConvConfig& checked(const ResConvConfig& c) {
  ENGINE_CHECK(c.in_channels > 0 && c.out_channels > 0 && c.w_dim > 0 && c.num_kernels >= 1,
               "ResConv: in_channels ({}), out_channels ({}), w_dim ({}) must be positive, num_kernels ({}) >= 1",
               c.in_channels, c.out_channels, c.w_dim, c.num_kernels);
  return c;
}

ModConvConfig conv_config(const ResConvConfig& c, int64_t in, bool up) {
  ModConvConfig m;
  m.in_channels = in;
  m.out_channels = c.out_channels;
  m.kernel_size = 3;
  m.w_dim = c.w_dim;
  m.num_kernels = c.num_kernels;
  m.demodulate = true;
  m.upsample = up;
  m.bias = true;
  m.activation = Activation::lrelu;
  m.lr_mul = c.lr_mul;
  m.eps = c.eps;
  return m;
}
}  // namespace

ResConv::ResConv(const ResConvConfig& c)
    : Module("ResConv"),
      config(checked(c)),
      conv1(register_module<ModulatedConv2d>("conv1", conv_config(c, c.in_channels, c.upsample))),
      conv2(register_module<ModulatedConv2d>("conv2", conv_config(c, c.out_channels, false))) {
  if (c.upsample || c.in_channels != c.out_channels)
    skip_connection = &register_module<EqualConv2d>("skip_connection", c.in_channels, c.out_channels, 1,
                                                    /*bias=*/false, 1, 0, c.lr_mul);
}

Tensor ResConv::skip(const Tensor& x) const {
  if (!skip_connection) return x;
  memory::ModuleScope scope("skip_connection");
  const Tensor y = skip_connection->forward(x);
  return config.upsample ? upsample2d(y) : y;
}

Tensor ResConv::forward(const Tensor& x, const Tensor& w) const {
  Tensor h;
  {
    memory::ModuleScope scope("conv1");
    h = conv1.forward(x, w);
  }
  {
    memory::ModuleScope scope("conv2");
    h = conv2.forward(h, w);
  }
  return mul(add(h, skip(x)), config.residual_gain);
}

}  // namespace engine::nn
