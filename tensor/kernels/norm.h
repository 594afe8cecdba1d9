// norm.h (kernels): portable bodies of layer_norm and group_norm, one normalised row at a time.
//
// Both ops normalise rows of K contiguous values: layer_norm's rows are the trailing
// normalized_shape (K = its product); group_norm's rows are one (sample, group) pair, i.e. Cg
// channels of HW values (K = Cg * HW). The affine parameters are indexed per channel:
// layer_norm is the case Cg = K, HW = 1. With mu and var the row's mean and biased variance
// (accumulated in double, two passes), rstd = 1 / sqrt(var + eps), xhat = (x - mu) rstd:
//
//   y_k     = xhat_k * w_c + b_c                     (c = channel of k; w = 1, b = 0 if absent)
//   dx_k    = rstd (gw_k - mean(gw) - xhat_k mean(gw xhat)),   gw_k = g_k w_c
//   dw_c    = sum over rows and the channel's values of g xhat,   db_c = sum of g
// Loops over contiguous values carry ENGINE_REDUCE_SIMD or go through lane_sum, so they vectorise.
#pragma once
#include "tensor/kernels/reduce.h"

namespace engine::kernels {

// x - mu in T without cancellation: x - T(mu) is exact when x is near mu (Sterbenz), and the
// rounding of mu to T is subtracted separately.
template <typename T>
struct Centre {
  T mu_t, mu_lo;
  ENGINE_HD explicit Centre(double mu) : mu_t(T(mu)), mu_lo(T(mu - double(T(mu)))) {}
  ENGINE_HD T operator()(T x) const { return (x - mu_t) - mu_lo; }
};

// Mean and rstd of a row of n values (n > 0): two passes, sums in double.
template <typename T>
ENGINE_HD void row_moments(const T* x, int64_t n, double eps, double* mean, double* rstd) {
  const double mu = SumReducer<T>{}.fold_contig(0.0, x, n) / double(n);
  const Centre<T> centre(mu);
  const double q = lane_sum(n, [x, centre](int64_t i) {
    const T d = centre(x[i]);
    return d * d;
  });
  *mean = mu;
  *rstd = 1.0 / sqrt(q / double(n) + eps);
}

// y = (x - mu) rstd w_c + b_c over one row of cg channels of hw values; w, b point at the row's
// first channel (null: absent).
template <typename T>
ENGINE_HD void norm_forward_row(const T* x, T* y, int64_t cg, int64_t hw, const T* w, const T* b, double mu,
                                double rstd) {
  const Centre<T> centre(mu);
  const T r = T(rstd);
  if (hw == 1) {  // layer_norm: one parameter per value; one loop per case keeps them vectorised
    if (w && b) {
      ENGINE_REDUCE_SIMD
      for (int64_t k = 0; k < cg; ++k) y[k] = centre(x[k]) * (r * w[k]) + b[k];
    } else if (w) {
      ENGINE_REDUCE_SIMD
      for (int64_t k = 0; k < cg; ++k) y[k] = centre(x[k]) * (r * w[k]);
    } else if (b) {
      ENGINE_REDUCE_SIMD
      for (int64_t k = 0; k < cg; ++k) y[k] = centre(x[k]) * r + b[k];
    } else {
      ENGINE_REDUCE_SIMD
      for (int64_t k = 0; k < cg; ++k) y[k] = centre(x[k]) * r;
    }
    return;
  }
  for (int64_t c = 0; c < cg; ++c) {
    const T a = T(rstd * (w ? double(w[c]) : 1.0));
    const T shift = b ? b[c] : T(0);
    const T* xc = x + c * hw;
    T* yc = y + c * hw;
    ENGINE_REDUCE_SIMD
    for (int64_t i = 0; i < hw; ++i) yc[i] = centre(xc[i]) * a + shift;
  }
}

// Over one channel's run of n values: sum(g) and sum(g (x - mu)), in double.
template <typename T>
ENGINE_HD void run_sums(const T* g, const T* x, int64_t n, const Centre<T>& centre, double* sg, double* sgx) {
  *sg = lane_sum(n, [g](int64_t i) { return g[i]; });
  *sgx = lane_sum(n, [g, x, centre](int64_t i) { return g[i] * centre(x[i]); });
}

// dx over one row (see the header formula).
template <typename T>
ENGINE_HD void norm_backward_row(const T* g, const T* x, T* dx, int64_t cg, int64_t hw, const T* w, double mu,
                                 double rstd) {
  const Centre<T> centre(mu);
  double sg = 0, sgx = 0;  // sum(gw), sum(gw (x - mu))
  if (hw == 1 && w) {
    sg = lane_sum(cg, [g, w](int64_t k) { return g[k] * w[k]; });
    sgx = lane_sum(cg, [g, w, x, centre](int64_t k) { return g[k] * w[k] * centre(x[k]); });
  } else {
    for (int64_t c = 0; c < cg; ++c) {
      double a, b;
      run_sums(g + c * hw, x + c * hw, hw, centre, &a, &b);
      const double wc = w ? double(w[c]) : 1.0;
      sg += a * wc;
      sgx += b * wc;
    }
  }
  const double n = double(cg * hw);
  const double mg = sg / n, mgx = sgx * rstd / n;  // mean(gw), mean(gw xhat)
  // dx = rstd (g wc - mg - (x - mu) rstd mgx) = (rstd wc) g + bx (x - mu) + cst
  const T bx = T(-rstd * rstd * mgx), cst = T(-rstd * mg), r = T(rstd);
  if (hw == 1 && w) {
    ENGINE_REDUCE_SIMD
    for (int64_t k = 0; k < cg; ++k) dx[k] = (r * w[k]) * g[k] + bx * centre(x[k]) + cst;
    return;
  }
  for (int64_t c = 0; c < cg; ++c) {
    const T a = T(rstd * (w ? double(w[c]) : 1.0));
    const T* gc = g + c * hw;
    const T* xc = x + c * hw;
    T* dc = dx + c * hw;
    ENGINE_REDUCE_SIMD
    for (int64_t i = 0; i < hw; ++i) dc[i] = a * gc[i] + bx * centre(xc[i]) + cst;
  }
}

// Per-channel sums over one row: dw[c] = sum_i g xhat, db[c] = sum_i g.
template <typename T>
ENGINE_HD void norm_channel_sums(const T* g, const T* x, int64_t cg, int64_t hw, double mu, double rstd, double* dw,
                                 double* db) {
  const Centre<T> centre(mu);
  for (int64_t c = 0; c < cg; ++c) {
    double a, b;
    run_sums(g + c * hw, x + c * hw, hw, centre, &a, &b);
    dw[c] = b * rstd;
    db[c] = a;
  }
}

// Accumulate one layer_norm row into column sums: dw[k] += g_k xhat_k, db[k] += g_k.
template <typename T>
ENGINE_HD void norm_accumulate_columns(const T* g, const T* x, int64_t k_n, double mu, double rstd, double* dw,
                                       double* db) {
  const Centre<T> centre(mu);
  const T r = T(rstd);
  if (dw) {
    ENGINE_REDUCE_SIMD
    for (int64_t k = 0; k < k_n; ++k) dw[k] += double(g[k] * (centre(x[k]) * r));
  }
  if (db) {
    ENGINE_REDUCE_SIMD
    for (int64_t k = 0; k < k_n; ++k) db[k] += double(g[k]);
  }
}

// Element-wise forms of norm_forward_row and norm_backward_row, for a row split over several GPU
// threads (tensor/cuda/norm.cu, long rows): the same operations on element k of a row (channel
// k / hw), given the row's statistics, so the values equal the row bodies'.
template <typename T>
ENGINE_HD T norm_forward_at(T x, int64_t k, int64_t hw, const T* w, const T* b, const Centre<T>& centre,
                            double rstd) {
  if (hw == 1) {
    const T r = T(rstd);
    if (w && b) return centre(x) * (r * w[k]) + b[k];
    if (w) return centre(x) * (r * w[k]);
    if (b) return centre(x) * r + b[k];
    return centre(x) * r;
  }
  const int64_t c = k / hw;
  const T a = T(rstd * (w ? double(w[c]) : 1.0));
  const T shift = b ? b[c] : T(0);
  return centre(x) * a + shift;
}

// Element k's terms of the backward's row sums: *sg += gw_k, *sgx += gw_k (x_k - mu).
template <typename T>
ENGINE_HD void norm_backward_terms(T g, T x, int64_t k, int64_t hw, const T* w, const Centre<T>& centre, double* sg,
                                   double* sgx) {
  if (hw == 1 && w) {
    *sg += double(g * w[k]);
    *sgx += double(g * w[k] * centre(x));
    return;
  }
  const double wc = w ? double(w[k / hw]) : 1.0;
  *sg += double(g) * wc;
  *sgx += double(g * centre(x)) * wc;
}

// dx_k from the row sums (n = row size), as norm_backward_row.
template <typename T>
ENGINE_HD T norm_backward_at(T g, T x, int64_t k, int64_t hw, const T* w, const Centre<T>& centre, double rstd,
                             double sg, double sgx, double n) {
  const double mg = sg / n, mgx = sgx * rstd / n;
  const T bx = T(-rstd * rstd * mgx), cst = T(-rstd * mg);
  if (hw == 1 && w) return (T(rstd) * w[k]) * g + bx * centre(x) + cst;
  const T a = T(rstd * (w ? double(w[k / hw]) : 1.0));
  return a * g + bx * centre(x) + cst;
}

// Rows [r0, r1) of column j of layer_norm's parameter gradients (rows of k values):
// *dw = sum_r g xhat, *db = sum_r g, each term rounded as in norm_accumulate_columns, summed in
// double in row order. mean, rstd: per-row statistics.
template <typename T>
ENGINE_HD void norm_column_sums(const T* g, const T* x, int64_t k, int64_t j, int64_t r0, int64_t r1,
                                const double* mean, const double* rstd, double* dw, double* db) {
  double sw = 0, sb = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const Centre<T> centre(mean[r]);
    const T gv = g[r * k + j];
    sw += double(gv * (centre(x[r * k + j]) * T(rstd[r])));
    sb += double(gv);
  }
  *dw = sw;
  *db = sb;
}

}  // namespace engine::kernels
