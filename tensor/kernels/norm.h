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
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

// Mean and rstd of a row of n values (n > 0).
template <typename T>
ENGINE_HD void row_moments(const T* x, int64_t n, double eps, double* mean, double* rstd) {
  // Four partial sums: breaks the add latency chain, fixed order (deterministic).
  double s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) s[k] += double(x[i + k]);
  for (; i < n; ++i) s[0] += double(x[i]);
  const double mu = ((s[0] + s[1]) + (s[2] + s[3])) / double(n);
  double q[4] = {0, 0, 0, 0};
  for (i = 0; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) {
      const double d = double(x[i + k]) - mu;
      q[k] += d * d;
    }
  for (; i < n; ++i) {
    const double d = double(x[i]) - mu;
    q[0] += d * d;
  }
  const double var = ((q[0] + q[1]) + (q[2] + q[3])) / double(n);
  *mean = mu;
  *rstd = 1.0 / sqrt(var + eps);
}

// x - mu in T without cancellation: x - T(mu) is exact when x is near mu (Sterbenz), and the
// rounding of mu to T is subtracted separately.
template <typename T>
struct Centre {
  T mu_t, mu_lo;
  ENGINE_HD explicit Centre(double mu) : mu_t(T(mu)), mu_lo(T(mu - double(T(mu)))) {}
  ENGINE_HD T operator()(T x) const { return (x - mu_t) - mu_lo; }
};

// y = (x - mu) rstd w_c + b_c over one row of cg channels of hw values; w, b point at the row's
// first channel (null: absent).
template <typename T>
ENGINE_HD void norm_forward_row(const T* x, T* y, int64_t cg, int64_t hw, const T* w, const T* b, double mu,
                                double rstd) {
  const Centre<T> centre(mu);
  for (int64_t c = 0; c < cg; ++c) {
    const T a = T(rstd * (w ? double(w[c]) : 1.0));
    const T shift = b ? b[c] : T(0);
    const T* xc = x + c * hw;
    T* yc = y + c * hw;
    for (int64_t i = 0; i < hw; ++i) yc[i] = centre(xc[i]) * a + shift;
  }
}

// dx over one row (see the header formula).
template <typename T>
ENGINE_HD void norm_backward_row(const T* g, const T* x, T* dx, int64_t cg, int64_t hw, const T* w, double mu,
                                 double rstd) {
  double sg = 0, sgx = 0;  // sum(gw), sum(gw xhat)
  for (int64_t c = 0; c < cg; ++c) {
    const double wc = w ? double(w[c]) : 1.0;
    double a = 0, bsum = 0;
    for (int64_t i = 0; i < hw; ++i) {
      const double gi = double(g[c * hw + i]);
      a += gi;
      bsum += gi * (double(x[c * hw + i]) - mu);
    }
    sg += a * wc;
    sgx += bsum * wc * rstd;
  }
  const double n = double(cg * hw);
  const double mg = sg / n, mgx = sgx / n;
  const Centre<T> centre(mu);
  const T bx = T(-rstd * rstd * mgx), cst = T(-rstd * mg);
  for (int64_t c = 0; c < cg; ++c) {
    // dx = rstd (g wc - mg - (x - mu) rstd mgx) = a g + bx (x - mu) + cst
    const T a = T(rstd * (w ? double(w[c]) : 1.0));
    for (int64_t i = 0; i < hw; ++i) dx[c * hw + i] = a * g[c * hw + i] + bx * centre(x[c * hw + i]) + cst;
  }
}

// Per-channel sums over one row: dw[c] = sum_i g xhat, db[c] = sum_i g (either may be null).
template <typename T>
ENGINE_HD void norm_channel_sums(const T* g, const T* x, int64_t cg, int64_t hw, double mu, double rstd, double* dw,
                                 double* db) {
  for (int64_t c = 0; c < cg; ++c) {
    double a = 0, bsum = 0;
    for (int64_t i = 0; i < hw; ++i) {
      const double gi = double(g[c * hw + i]);
      a += gi;
      bsum += gi * (double(x[c * hw + i]) - mu);
    }
    if (dw) dw[c] = bsum * rstd;
    if (db) db[c] = a;
  }
}

// Accumulate one layer_norm row into column sums: dw[k] += g_k xhat_k, db[k] += g_k.
template <typename T>
ENGINE_HD void norm_accumulate_columns(const T* g, const T* x, int64_t k_n, double mu, double rstd, double* dw,
                                       double* db) {
  for (int64_t k = 0; k < k_n; ++k) {
    const double gk = double(g[k]);
    if (dw) dw[k] += gk * (double(x[k]) - mu) * rstd;
    if (db) db[k] += gk;
  }
}

}  // namespace engine::kernels
