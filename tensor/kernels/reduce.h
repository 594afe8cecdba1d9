// reduce.h (kernels): portable bodies of the reductions (sum, mean, amax, amin, logsumexp, var,
// argmax). The CPU loop (tensor/cpu/reduce.h) and, later, the CUDA kernels drive them.
//
// A reducer folds the values x_1..x_n of one output element into an accumulator:
//   identity(o)     the starting accumulator of output o; every lane and every chunk of a split
//                   reduction starts from it, so it must be neutral for combine
//   step(acc, v)    fold one value
//   combine(a, b)   merge two partial accumulators (a folded elements before b)
//   finish(acc, n)  the output value; n = number of elements folded
//   fold_contig(acc, p, n)  (optional) fold a contiguous run, vectorised, in a fixed lane order
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

// Ask the host compiler to vectorise a loop (GCC's -O2 cost model does not vectorise loops of
// unknown length on its own); nvcc ignores it.
#if defined(__CUDACC__)
#define ENGINE_REDUCE_SIMD
#else
#define ENGINE_REDUCE_SIMD _Pragma("omp simd")
#endif

// lane_fold(n, init, op, f) = op-fold of f(0..n-1) with 16 accumulators: accumulator k folds f(i)
// for i = k (mod 16) in increasing i, the 16 are combined in a fixed tree, then the tail is
// folded in. The order is fixed in the source, not by the vector width, so every CPU (and thread
// count) gives the same bits. The accumulators are named scalars, not an array: GCC keeps them
// in registers and vectorises the 16 independent chains (an array made it go through memory).
// op must be associative enough for the caller's purpose (+ on doubles).
template <typename A, typename Op, typename F>
ENGINE_HD A lane_fold(int64_t n, A init, const Op& op, const F& f) {
  A a0 = init, a1 = init, a2 = init, a3 = init, a4 = init, a5 = init, a6 = init, a7 = init;
  A a8 = init, a9 = init, a10 = init, a11 = init, a12 = init, a13 = init, a14 = init, a15 = init;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = op(a0, A(f(i)));
    a1 = op(a1, A(f(i + 1)));
    a2 = op(a2, A(f(i + 2)));
    a3 = op(a3, A(f(i + 3)));
    a4 = op(a4, A(f(i + 4)));
    a5 = op(a5, A(f(i + 5)));
    a6 = op(a6, A(f(i + 6)));
    a7 = op(a7, A(f(i + 7)));
    a8 = op(a8, A(f(i + 8)));
    a9 = op(a9, A(f(i + 9)));
    a10 = op(a10, A(f(i + 10)));
    a11 = op(a11, A(f(i + 11)));
    a12 = op(a12, A(f(i + 12)));
    a13 = op(a13, A(f(i + 13)));
    a14 = op(a14, A(f(i + 14)));
    a15 = op(a15, A(f(i + 15)));
  }
  A s = op(op(op(op(a0, a8), op(a4, a12)), op(op(a2, a10), op(a6, a14))),
           op(op(op(a1, a9), op(a5, a13)), op(op(a3, a11), op(a7, a15))));
  for (; i < n; ++i) s = op(s, A(f(i)));
  return s;
}

struct PlusOp {
  ENGINE_HD double operator()(double a, double b) const { return a + b; }
};

// sum_{i<n} f(i) in double, in lane_fold's fixed order.
template <typename F>
ENGINE_HD double lane_sum(int64_t n, const F& f) {
  return lane_fold(n, 0.0, PlusOp{}, f);
}

// vexp: exp written as plain arithmetic so that a loop of it vectorises (glibc's expf is a call
// per element), for softmax and logsumexp, whose arguments are x - max(x) <= 0.
// x = n ln2 + r with |r| <= ln2/2, e^r by Cephes' degree-6 polynomial (about 1 ulp), 2^n from the
// exponent bits. Below -87.33 (where e^x leaves the normal range) and at -inf the result is 0;
// above 88 it is inf (the true value overflows at 88.72); NaN stays NaN. Every select is a bit
// mask: GCC does not if-convert float comparisons under -ftrapping-math, which would leave a
// branch in the loop and stop the vectoriser.
ENGINE_HD float vexp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const int32_t ix = __builtin_bit_cast(int32_t, x);
  const uint32_t ux = uint32_t(ix);
  const int32_t m_small = -int32_t(ux > 0xc2aeac4fu);  // x < -87.33654 (bits of -87.33654f), -inf
  const int32_t m_big = -int32_t(ix > 0x42b00000);      // x > 88 (bits of 88.0f), +inf
  const int32_t m_nan = -int32_t((ux & 0x7fffffffu) > 0x7f800000u);
  const int32_t keep = ~(m_small | m_big);
  const float xc =
      __builtin_bit_cast(float, (ix & keep) | (m_small & int32_t(0xc2aeac4fu)) | (m_big & int32_t(0x42b00000)));
  // n = round(xc / ln2) with the 1.5 * 2^23 trick; r = xc - n ln2 in two parts (Cody-Waite)
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t pow2 = (int32_t(n) + 127) << 23;  // n in [-126, 127]: a normal power of two
  const int32_t e = __builtin_bit_cast(int32_t, p * __builtin_bit_cast(float, pow2));
  const int32_t out = (e & keep) | (m_big & int32_t(0x7f800000));  // small: +0, big: +inf
  return __builtin_bit_cast(float, (m_nan & ix) | (~m_nan & out));
#endif
}
ENGINE_HD double vexp(double x) { return exp(x); }

// sexp: exp for scalar (strided, not vectorised) code. vexp one element at a time is slower than
// the C library, as its bit tricks move values between integer and float registers.
ENGINE_HD float sexp(float x) { return expf(x); }
ENGINE_HD double sexp(double x) { return exp(x); }

template <typename T>
ENGINE_HD bool is_nan(T v) { return v != v; }

// sum (scale = 1) and mean (divide = true). Out: T for results, double for internal statistics.
// fold_contig: a contiguous run is summed by lane_sum (vectorised, fixed order). Every value is
// added in double, so a constant f32 row has an exact mean.
template <typename T, typename Out = T>
struct SumReducer {
  using Acc = double;
  bool divide = false;
  ENGINE_HD Acc identity(int64_t) const { return 0.0; }
  ENGINE_HD Acc step(Acc a, T v) const { return a + double(v); }
  ENGINE_HD Acc combine(Acc a, Acc b) const { return a + b; }
  ENGINE_HD Out finish(Acc a, int64_t n) const { return Out(divide ? a / double(n) : a); }
  ENGINE_HD Acc fold_contig(Acc a, const T* p, int64_t n) const {
    return a + lane_sum(n, [p](int64_t i) { return p[i]; });
  }
};

// amax (IsMin = false) and amin (IsMin = true). A NaN, once seen, stays: v != v selects a NaN v,
// and no comparison with a NaN accumulator is true, so it is kept (branch-free: vectorises).
template <typename T, bool IsMin>
struct MaxMinReducer {
  using Acc = T;
  ENGINE_HD Acc identity(int64_t) const { return IsMin ? T(INFINITY) : T(-INFINITY); }
  ENGINE_HD Acc step(Acc a, T v) const { return (v != v || (IsMin ? v < a : v > a)) ? v : a; }
  ENGINE_HD Acc combine(Acc a, Acc b) const { return step(a, b); }
  ENGINE_HD T finish(Acc a, int64_t) const { return a; }
  // 16 lanes in an array (unlike lane_fold's named scalars): GCC vectorises the select only in
  // this form, since it does not if-convert float compares in straight-line code.
  ENGINE_HD Acc fold_contig(Acc a, const T* p, int64_t n) const {
    int64_t i = 0;
    if (n >= 32) {
      T lane[16];
      for (int k = 0; k < 16; ++k) lane[k] = a;
      for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; ++k) lane[k] = step(lane[k], p[i + k]);
      for (int k = 0; k < 16; ++k) a = step(a, lane[k]);
    }
    for (; i < n; ++i) a = step(a, p[i]);
    return a;
  }
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
    a.s += double(sexp(T(v - a.m)));
    return a;
  }
  ENGINE_HD Acc combine(Acc a, Acc b) const { return {a.m, a.s + b.s}; }
  ENGINE_HD T finish(Acc a, int64_t) const {
    // An infinite or NaN maximum is the answer itself (inf - inf would make the sum NaN).
    if (is_nan(a.m) || a.m == T(INFINITY) || a.m == T(-INFINITY)) return a.m;
    return T(double(a.m) + log(a.s));
  }
  ENGINE_HD Acc fold_contig(Acc a, const T* p, int64_t n) const {
    const T m = a.m;
    a.s += lane_sum(n, [p, m](int64_t i) { return vexp(T(p[i] - m)); });
    return a;
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
