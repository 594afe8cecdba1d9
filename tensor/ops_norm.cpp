// ops_norm.cpp: layer_norm (Ba et al. 2016) and group_norm (Wu & He 2018), each one fused pass
// per normalised row: statistics in double (two passes over the row, which sits in cache), then
// y = (x - mean) * rstd * w + b. The row math is in tensor/kernels/norm.h, the rows are spread
// over threads by cpu::parallel_items (Note [CPU multiversioning]); the backward formulas
// (fused first order, differentiable composite under create_graph) in autograd/formulas/norm.cpp.
// CUDA tensors run the same row bodies, one GPU thread per row (tensor/cuda/norm.h).
#include "autograd/formulas/norm.h"
#include "tensor/cpu/reduce.h"
#include "tensor/dispatch.h"
#include "tensor/kernels/norm.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/norm.h"
#endif

namespace engine {

namespace F = autograd::formulas;

namespace {

void check_affine(const char* op, const char* what, const Tensor& p, const Tensor& x, const Dims& want) {
  if (!p.defined()) return;
  check_same(op, x, p);
  ENGINE_CHECK(p.sizes() == want, "{}: {} of shape {} does not match the expected shape {}", op, what,
               p.sizes().str(), want.str());
}

Tensor norm_forward(const char* op, const char* node_name, const F::NormGeometry& geo, const Tensor& x,
                    const Tensor& weight, const Tensor& bias) {
  Tensor xc = contiguous(x);
  Tensor wc = weight.defined() ? contiguous(weight) : Tensor();
  Tensor bc = bias.defined() ? contiguous(bias) : Tensor();
  Tensor y = empty(x.sizes(), opts(x.dtype(), x.device()));
  const int64_t rows = geo.rows(), k = geo.row_size();
  Tensor mean = empty({rows}, opts(DType::f64, x.device()));
  Tensor rstd = empty({rows}, opts(DType::f64, x.device()));
  if (use_cuda(op, x)) {
#if ENGINE_WITH_CUDA
    cuda::NormShape s;
    s.rows = rows;
    s.groups = geo.groups;
    s.cg = geo.cg;
    s.hw = geo.hw;
    s.eps = geo.eps;
    cuda::norm_forward(s, y, mean, rstd, xc, wc, bc);
#endif
  } else if (k > 0) {
    dispatch_floating(x.dtype(), op, [&](auto zero) {
      using T = decltype(zero);
      const T* xp = xc.data<T>();
      T* yp = y.data<T>();
      const T* wp = wc.defined() ? wc.data<T>() : nullptr;
      const T* bp = bc.defined() ? bc.data<T>() : nullptr;
      double* mp = mean.data<double>();
      double* rp = rstd.data<double>();
      cpu::parallel_items(rows, 2 * k, [&](int64_t r) {
        const int64_t group_first = (r % geo.groups) * geo.cg;  // first channel of this row
        kernels::row_moments(xp + r * k, k, geo.eps, &mp[r], &rp[r]);
        kernels::norm_forward_row(xp + r * k, yp + r * k, geo.cg, geo.hw, wp ? wp + group_first : nullptr,
                                  bp ? bp + group_first : nullptr, mp[r], rp[r]);
      });
    });
  }
  F::norm(node_name, geo, xc, wc, bc, y, mean, rstd);
  return y;
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Dims& normalized_shape, const Tensor& weight, const Tensor& bias,
                  double eps) {
  ENGINE_OP("layer_norm", x, weight, bias);
  ENGINE_CHECK(x.defined(), "layer_norm: undefined input");
  check_floating("layer_norm", x);
  const int nn = normalized_shape.size();
  ENGINE_CHECK(nn > 0, "layer_norm: normalized_shape must not be empty");
  bool match = nn <= x.dim();
  for (int i = 0; match && i < nn; ++i) match = x.sizes()[x.dim() - nn + i] == normalized_shape[i];
  ENGINE_CHECK(match, "layer_norm: normalized_shape {} does not match the trailing dims of the input of shape {}",
               normalized_shape.str(), x.sizes().str());
  check_affine("layer_norm", "weight", weight, x, normalized_shape);
  check_affine("layer_norm", "bias", bias, x, normalized_shape);
  ENGINE_CHECK(eps >= 0, "layer_norm: eps must be >= 0, got {}", eps);
  F::NormGeometry geo;
  geo.cg = normalized_shape.product();
  geo.a = 1;
  for (int d = 0; d < x.dim() - nn; ++d) geo.a *= x.sizes()[d];
  geo.eps = eps;
  geo.layer = true;
  return norm_forward("layer_norm", "LayerNormBackward", geo, x, weight, bias);
}

Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  ENGINE_OP("group_norm", x, weight, bias);
  ENGINE_CHECK(x.defined(), "group_norm: undefined input");
  check_floating("group_norm", x);
  ENGINE_CHECK(x.dim() >= 2, "group_norm: expected an input [N, C, ...] of at least 2 dims, got shape {}",
               x.sizes().str());
  const int64_t c = x.size(1);
  ENGINE_CHECK(num_groups > 0, "group_norm: num_groups must be positive, got {}", num_groups);
  ENGINE_CHECK(c % num_groups == 0, "group_norm: {} channels are not divisible into {} groups", c, num_groups);
  check_affine("group_norm", "weight", weight, x, Dims{c});
  check_affine("group_norm", "bias", bias, x, Dims{c});
  ENGINE_CHECK(eps >= 0, "group_norm: eps must be >= 0, got {}", eps);
  F::NormGeometry geo;
  geo.a = x.size(0);
  geo.groups = num_groups;
  geo.cg = c / num_groups;
  for (int d = 2; d < x.dim(); ++d) geo.hw *= x.sizes()[d];
  geo.eps = eps;
  geo.layer = false;
  return norm_forward("group_norm", "GroupNormBackward", geo, x, weight, bias);
}

}  // namespace engine
