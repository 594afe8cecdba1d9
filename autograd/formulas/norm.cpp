// norm.cpp: backward formulas of layer_norm and group_norm. With x4 = x viewed as
// [A, G, Cg, HW], statistics over dims {2, 3} (biased variance), w and b viewed as [1, G, Cg, 1]:
//
//   mu = mean(x4), rstd = (var(x4, correction 0) + eps)^(-1/2), xhat = (x4 - mu) rstd
//   gw = g * w                                 (g alone when there is no weight)
//   dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat))
//   dw = sum over dims {0, 3} of g * xhat       db = sum over dims {0, 3} of g
//
// Two equal implementations. Under create_graph (grad mode on during backward) the formula above
// is built from differentiable ops, with mu and rstd recomputed from x, so a double backward
// (R1 through a normalisation layer) sees their dependence on x. Otherwise no graph is recorded,
// and fused row kernels (tensor/kernels/norm.h) reuse the forward's saved statistics.
// dw/db accumulate in double in an order fixed by the shapes (thread-count independent).
#include "autograd/formulas/norm.h"

#include <algorithm>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/cpu/reduce.h"
#include "tensor/dispatch.h"
#include "tensor/kernels/norm.h"
#include "tensor/op_helpers.h"
#include "tensor/ops.h"
#if ENGINE_WITH_CUDA
#include "tensor/cuda/norm.h"
#endif

namespace engine::autograd::formulas {

namespace {

// (v)^(-1/2) from differentiable ops present everywhere; v is per-row (tiny), so the two
// transcendental calls cost nothing next to the row-sized tensors.
Tensor inv_sqrt(const Tensor& v) { return exp(mul(log(v), -0.5)); }

struct NormGrads {
  Tensor dx, dw, db;
};

NormGrads composite_backward(const NormGeometry& geo, const Tensor& g, const Tensor& x, const Tensor& w,
                             bool need_x, bool need_w, bool need_b, const Dims& w_sizes) {
  const Dims shape4{geo.a, geo.groups, geo.cg, geo.hw};
  const Dims stat_dims{2, 3}, param_dims{0, 3};
  Tensor x4 = reshape(x, shape4), g4 = reshape(g, shape4);
  Tensor mu = mean(x4, stat_dims, true);
  Tensor xc = sub(x4, mu);
  Tensor rstd = inv_sqrt(add(mean(mul(xc, xc), stat_dims, true), geo.eps));
  Tensor xhat = mul(xc, rstd);
  NormGrads r;
  if (need_x) {
    Tensor gw = w.defined() ? mul(g4, reshape(w, {1, geo.groups, geo.cg, 1})) : g4;
    Tensor inner = sub(sub(gw, mean(gw, stat_dims, true)), mul(xhat, mean(mul(gw, xhat), stat_dims, true)));
    r.dx = reshape(mul(rstd, inner), x.sizes());
  }
  if (need_w) r.dw = reshape(sum(mul(g4, xhat), param_dims), w_sizes);
  if (need_b) r.db = reshape(sum(g4, param_dims), w_sizes);
  return r;
}

NormGrads fused_backward(const NormGeometry& geo, const Tensor& g_in, const Tensor& x, const Tensor& w,
                         const Tensor& mean_t, const Tensor& rstd_t, bool need_x, bool need_w, bool need_b,
                         const Dims& w_sizes) {
  ENGINE_OP(geo.layer ? "layer_norm_backward" : "group_norm_backward", g_in, x);
  Tensor g = contiguous(g_in);
  const int64_t rows = geo.rows(), k = geo.row_size(), cg = geo.cg, hw = geo.hw, groups = geo.groups;
  const int64_t channels = groups * cg;
  NormGrads r;
  if (need_x) r.dx = empty(x.sizes(), opts(x.dtype(), x.device()));
  if (need_w) r.dw = empty(w_sizes, opts(x.dtype(), x.device()));
  if (need_b) r.db = empty(w_sizes, opts(x.dtype(), x.device()));
  if (use_cuda(geo.layer ? "layer_norm_backward" : "group_norm_backward", x)) {
#if ENGINE_WITH_CUDA
    cuda::NormShape s;
    s.rows = rows;
    s.groups = groups;
    s.cg = cg;
    s.hw = hw;
    s.eps = geo.eps;
    cuda::norm_backward(s, geo.layer, r.dx, r.dw, r.db, g, x, w, mean_t, rstd_t);
#endif
    return r;
  }
  dispatch_floating(x.dtype(), "norm_backward", [&](auto zero) {
    using T = decltype(zero);
    const T* gp = g.data<T>();
    const T* xp = x.data<T>();
    const T* wp = w.defined() ? w.data<T>() : nullptr;
    const double* mp = mean_t.data<double>();
    const double* rp = rstd_t.data<double>();
    if (need_x && k > 0) {
      T* dp = r.dx.data<T>();
      cpu::parallel_items(rows, 3 * k, [&](int64_t row) {
        kernels::norm_backward_row(gp + row * k, xp + row * k, dp + row * k, cg, hw,
                                   wp ? wp + (row % groups) * cg : nullptr, mp[row], rp[row]);
      });
    }
    if (!need_w && !need_b) return;
    T* dwp = need_w ? r.dw.data<T>() : nullptr;
    T* dbp = need_b ? r.db.data<T>() : nullptr;
    if (geo.layer) {
      // Column sums over rows: rows cut into chunks fixed by the shapes, partial sums per chunk
      // in parallel, then the chunks added in order.
      const int64_t chunk = std::max((rows + 63) / 64, (int64_t(16384) + k - 1) / std::max<int64_t>(k, 1));
      const int64_t n_chunks = rows > 0 ? (rows + chunk - 1) / chunk : 0;
      Tensor part_w = zeros({n_chunks, k}, opts(DType::f64, x.device()));
      Tensor part_b = zeros({n_chunks, k}, opts(DType::f64, x.device()));
      double* pw = part_w.data<double>();
      double* pb = part_b.data<double>();
      cpu::parallel_items(n_chunks, chunk * k * 2, [&](int64_t c) {
        for (int64_t row = c * chunk; row < std::min(rows, (c + 1) * chunk); ++row)
          kernels::norm_accumulate_columns(gp + row * k, xp + row * k, k, mp[row], rp[row],
                                           dwp ? pw + c * k : nullptr, dbp ? pb + c * k : nullptr);
      });
      cpu::parallel_items(k, n_chunks * 2, [&](int64_t j) {
        double sw = 0, sb = 0;
        for (int64_t c = 0; c < n_chunks; ++c) {
          sw += pw[c * k + j];
          sb += pb[c * k + j];
        }
        if (dwp) dwp[j] = T(sw);
        if (dbp) dbp[j] = T(sb);
      });
    } else {
      // Per-(sample, channel) sums, each written by the row that owns it, then summed over the
      // samples in order.
      Tensor part_w = empty({geo.a, channels}, opts(DType::f64, x.device()));
      Tensor part_b = empty({geo.a, channels}, opts(DType::f64, x.device()));
      double* pw = part_w.data<double>();
      double* pb = part_b.data<double>();
      cpu::parallel_items(rows, 2 * k, [&](int64_t row) {
        kernels::norm_channel_sums(gp + row * k, xp + row * k, cg, hw, mp[row], rp[row], pw + row * cg,
                                   pb + row * cg);
      });
      for (int64_t ch = 0; ch < channels; ++ch) {
        double sw = 0, sb = 0;
        for (int64_t n = 0; n < geo.a; ++n) {
          sw += pw[n * channels + ch];
          sb += pb[n * channels + ch];
        }
        if (dwp) dwp[ch] = T(sw);
        if (dbp) dbp[ch] = T(sb);
      }
    }
  });
  return r;
}

}  // namespace

void norm(const char* name, const NormGeometry& geo, const Tensor& x, const Tensor& w, const Tensor& b,
          const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  auto node = record(name, {x, w, b}, {y});
  if (!node) return;
  node->save(x, SaveMode::exact);
  node->save(w, SaveMode::exact);
  node->save(mean, SaveMode::exact);
  node->save(rstd, SaveMode::exact);
  const Dims w_sizes = w.defined() ? w.sizes() : b.defined() ? b.sizes() : Dims{};
  node->backward_fn = [geo, w_sizes](Node& n, const TensorList& g) -> TensorList {
    const bool need_x = n.needs_input_grad(0), need_w = n.needs_input_grad(1), need_b = n.needs_input_grad(2);
    NormGrads r = grad_enabled()
                      ? composite_backward(geo, g[0], n.saved(0), n.saved(1), need_x, need_w, need_b, w_sizes)
                      : fused_backward(geo, g[0], n.saved(0), n.saved(1), n.saved(2), n.saved(3), need_x, need_w,
                                       need_b, w_sizes);
    return {r.dx, r.dw, r.db};
  };
}

}  // namespace engine::autograd::formulas
