// softmax.h (kernels): portable bodies of softmax, log_softmax and cross_entropy, one line (the
// softmax dim) at a time, with explicit strides so a line can be a row or a column.
//
//   softmax(x)_i     = exp(x_i - m) / s,         m = max_j x_j,  s = sum_j exp(x_j - m)
//   log_softmax(x)_i = x_i - m - log(s)                 (max-shifted: exp never overflows)
//   softmax'     : dx_i = y_i (g_i - sum_j g_j y_j)      (y = softmax(x))
//   log_softmax' : dx_i = g_i - exp(y_i) sum_j g_j       (y = log_softmax(x))
//   cross_entropy row loss: l = m + log(s) - x_t         (= -log_softmax(x)_t)
//   cross_entropy'        : dx_i = (softmax(x)_i - [i == t]) * gl   (gl = dloss/dl)
// Sums accumulate in double. A line whose max is +-inf or NaN gives NaN, as PyTorch.
#pragma once
#include "tensor/kernels/reduce.h"

namespace engine::kernels {

template <typename T>
ENGINE_HD T line_max(const T* x, int64_t n, int64_t xs) {
  const MaxMinReducer<T, false> r;
  if (xs == 1) return r.fold_contig(r.identity(0), x, n);
  T m = r.identity(0);
  for (int64_t i = 0; i < n; ++i) m = r.step(m, x[i * xs]);
  return m;
}

// sum_i exp(x_i - m) in double.
template <typename T>
ENGINE_HD double exp_sum(const T* x, int64_t xs, T m, int64_t n) {
  if (xs == 1) return lane_sum(n, [x, m](int64_t i) { return vexp(T(x[i] - m)); });
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(sexp(T(x[i * xs] - m)));
  return s;
}

// y = softmax(x) along one line (x and y do not overlap). Contiguous lines: exponentials in a
// vectorised loop, then their sum (lane_sum), then the scaling; strided lines: scalar loops.
template <typename T>
ENGINE_HD void softmax_line(const T* x, int64_t xs, T* y, int64_t ys, int64_t n) {
  const T m = line_max(x, n, xs);
  double s = 0;
  if (xs == 1 && ys == 1) {
    ENGINE_REDUCE_SIMD
    for (int64_t i = 0; i < n; ++i) y[i] = vexp(T(x[i] - m));
    s = lane_sum(n, [y](int64_t i) { return y[i]; });
    const T inv = T(1.0 / s);
    ENGINE_REDUCE_SIMD
    for (int64_t i = 0; i < n; ++i) y[i] *= inv;
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const T e = sexp(T(x[i * xs] - m));
    y[i * ys] = e;
    s += double(e);
  }
  const T inv = T(1.0 / s);
  for (int64_t i = 0; i < n; ++i) y[i * ys] *= inv;
}

// log(sum_i exp(x_i)) of one line, max-shifted.
template <typename T>
ENGINE_HD double logsumexp_line(const T* x, int64_t n, int64_t xs) {
  const T m = line_max(x, n, xs);
  return double(m) + log(exp_sum(x, xs, m, n));
}

// y = log_softmax(x) along one line.
template <typename T>
ENGINE_HD void log_softmax_line(const T* x, int64_t xs, T* y, int64_t ys, int64_t n) {
  const double lse = logsumexp_line(x, n, xs);
  ENGINE_REDUCE_SIMD
  for (int64_t i = 0; i < n; ++i) y[i * ys] = T(double(x[i * xs]) - lse);
}

// dx = y (g - sum(g y)) along one line (y = softmax output).
template <typename T>
ENGINE_HD void softmax_backward_line(const T* g, int64_t gs, const T* y, int64_t ys, T* dx, int64_t ds, int64_t n) {
  const T d = T(lane_sum(n, [=](int64_t i) { return double(g[i * gs]) * double(y[i * ys]); }));
  ENGINE_REDUCE_SIMD
  for (int64_t i = 0; i < n; ++i) dx[i * ds] = y[i * ys] * (g[i * gs] - d);
}

// dx = g - exp(y) sum(g) along one line (y = log_softmax output, <= 0).
template <typename T>
ENGINE_HD void log_softmax_backward_line(const T* g, int64_t gs, const T* y, int64_t ys, T* dx, int64_t ds,
                                         int64_t n) {
  const T t = T(lane_sum(n, [=](int64_t i) { return g[i * gs]; }));
  if (gs == 1 && ys == 1 && ds == 1) {
    ENGINE_REDUCE_SIMD
    for (int64_t i = 0; i < n; ++i) dx[i] = g[i] - vexp(y[i]) * t;
  } else {
    for (int64_t i = 0; i < n; ++i) dx[i * ds] = g[i * gs] - sexp(y[i * ys]) * t;
  }
}

// -log_softmax(x)_target of one row of logits.
template <typename T>
ENGINE_HD double cross_entropy_row(const T* x, int64_t xs, int64_t n, int64_t target) {
  return logsumexp_line(x, n, xs) - double(x[target * xs]);
}

// dx = (softmax(x) - onehot(target)) * scale along one row.
template <typename T>
ENGINE_HD void cross_entropy_backward_row(const T* x, int64_t xs, T* dx, int64_t ds, int64_t n, int64_t target,
                                          T scale) {
  softmax_line(x, xs, dx, ds, n);
  for (int64_t i = 0; i < n; ++i) dx[i * ds] = (dx[i * ds] - (i == target ? T(1) : T(0))) * scale;
}

}  // namespace engine::kernels
