// reduce.h (kernels): portable bodies of the reductions (sum, mean, amax, amin, logsumexp, var,
// argmax). The CPU loop (tensor/cpu/reduce.h) and, later, the CUDA kernels drive them.
//
// A reducer folds the values x_1..x_n of one output element into an accumulator:
//   identity(o)     the starting accumulator of output o; every lane and every chunk of a split
//                   reduction starts from it, so it must be neutral for combine
//   step(acc, v)    fold one value
//   combine(a, b)   merge two partial accumulators (a folded elements before b)
//   finish(acc, n)  the output value; n = number of elements folded
// Sums accumulate in double whatever T is, so f32 sums of millions of elements stay accurate.
//
//   sum        = sum_i x_i
//   mean       = sum_i x_i / n                     (0/0 = NaN for an empty reduction, as PyTorch)
//   amax, amin = max_i x_i, min_i x_i              (NaN wins, as PyTorch)
//   logsumexp  = m + log(sum_i exp(x_i - m)),  m = max_i x_i   (max-shifted: no overflow);
//                m = +-inf or NaN gives m itself
//   var        = sum_i (x_i - mean)^2 / max(0, n - correction)  (two passes: the mean first)
//   argmax     = the first i with x_i = max (NaN counts as the maximum, as PyTorch)
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

// exp/log on the compute type (float math for f32, which is what makes f32 fast).
ENGINE_HD float exp_t(float x) { return expf(x); }
ENGINE_HD double exp_t(double x) { return exp(x); }
ENGINE_HD float log_t(float x) { return logf(x); }
ENGINE_HD double log_t(double x) { return log(x); }

template <typename T>
ENGINE_HD bool is_nan(T v) { return v != v; }

// sum (scale = 1) and mean (divide = true). Out: T for results, double for internal statistics.
template <typename T, typename Out = T>
struct SumReducer {
  using Acc = double;
  bool divide = false;
  ENGINE_HD Acc identity(int64_t) const { return 0.0; }
  ENGINE_HD Acc step(Acc a, T v) const { return a + double(v); }
  ENGINE_HD Acc combine(Acc a, Acc b) const { return a + b; }
  ENGINE_HD Out finish(Acc a, int64_t n) const { return Out(divide ? a / double(n) : a); }
};

// amax (is_min = false) and amin (is_min = true). A NaN, once seen, stays.
template <typename T>
struct MaxMinReducer {
  using Acc = T;
  bool is_min = false;
  ENGINE_HD Acc identity(int64_t) const { return is_min ? T(INFINITY) : T(-INFINITY); }
  ENGINE_HD Acc step(Acc a, T v) const {
    if (is_nan(a)) return a;
    if (is_nan(v)) return v;
    return is_min ? (v < a ? v : a) : (v > a ? v : a);
  }
  ENGINE_HD Acc combine(Acc a, Acc b) const { return step(a, b); }
  ENGINE_HD T finish(Acc a, int64_t) const { return a; }
};

// logsumexp, second pass: `maxes` holds max_i x_i of every output (first pass: MaxMinReducer).
template <typename T>
struct LogSumExpReducer {
  struct Acc {
    T m;       // the shift of this output
    double s;  // sum_i exp(x_i - m)
  };
  const T* maxes = nullptr;
  ENGINE_HD Acc identity(int64_t o) const { return {maxes[o], 0.0}; }
  ENGINE_HD Acc step(Acc a, T v) const {
    a.s += double(exp_t(T(v - a.m)));
    return a;
  }
  ENGINE_HD Acc combine(Acc a, Acc b) const { return {a.m, a.s + b.s}; }
  ENGINE_HD T finish(Acc a, int64_t) const {
    // An infinite or NaN maximum is the answer itself (inf - inf would make the sum NaN).
    if (is_nan(a.m) || a.m == T(INFINITY) || a.m == T(-INFINITY)) return a.m;
    return T(double(a.m) + log(a.s));
  }
};

// var, second pass: `means` holds the mean of every output in double (first pass: SumReducer).
template <typename T>
struct VarReducer {
  struct Acc {
    double mean;
    double s;  // sum_i (x_i - mean)^2
  };
  const double* means = nullptr;
  int64_t correction = 1;
  ENGINE_HD Acc identity(int64_t o) const { return {means[o], 0.0}; }
  ENGINE_HD Acc step(Acc a, T v) const {
    const double d = double(v) - a.mean;
    a.s += d * d;
    return a;
  }
  ENGINE_HD Acc combine(Acc a, Acc b) const { return {a.mean, a.s + b.s}; }
  ENGINE_HD T finish(Acc a, int64_t n) const {
    const int64_t dof = n - correction > 0 ? n - correction : 0;
    return T(a.s / double(dof));  // dof = 0: inf or NaN, as PyTorch
  }
};

// argmax along one dim of length n with stride `stride`: the first index of the maximum.
template <typename T>
ENGINE_HD int64_t argmax_line(const T* p, int64_t n, int64_t stride) {
  int64_t best = 0;
  T bv = p[0];
  if (is_nan(bv)) return 0;
  for (int64_t i = 1; i < n; ++i) {
    const T v = p[i * stride];
    if (is_nan(v)) return i;
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}

// The amax/amin gradient mask: 1 where x equals its output element (a tied extremum), else 0.
struct EqMaskFn {
  template <typename T>
  ENGINE_HD T operator()(T x, T out) const { return x == out ? T(1) : T(0); }
};

}  // namespace engine::kernels
