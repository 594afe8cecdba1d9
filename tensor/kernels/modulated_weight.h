// modulated_weight.h: the portable bodies of the fused modulation + demodulation op
// (engine::modulated_weight, tensor/ops_fused.cpp; docs/aurora-spec.md section 3, StyleGAN2's
// modulation / demodulation, Karras et al. 2020 eq. 1-3, with Aurora's two pre-normalisations).
// The CPU loops (ops_fused.cpp) and the CUDA launchers (tensor/cuda/fused.cu) call these same
// functions, one call per independent unit (a row (b, o, i) of taps, a pair (b, o), ...).
//
// Layouts (all contiguous): K [Bk, O, I, T] (Bk = B for a per-sample kernel bank, 1 for a shared
// kernel; T = number of taps, 1 for a linear), s [B, I], W [B, O, I, T] or, `transposed`,
// [B, I, O, T] (the layout conv_transpose2d and the token bmm read).
//
// ---- Forward ------------------------------------------------------------------------------------
// demodulate = false:  W[b,o,i,t] = K[o,i,t] * (s[b,i] * gain)
// demodulate = true (spec 3.3; Note [modulation without weight-sized temporaries], nn/modconv.cpp):
//   q[o,i]   = sum_t K[o,i,t]^2                      (per (bk, o, i); bk dropped below)
//   r2[o]    = sum_i q[o,i] / (I T)                  mean square of the kernel row (rms^2)
//   m        = sum_{b,i} s[b,i]^2 / (B I),   sn = s / sqrt(m)   (ONE scalar over the batch tensor)
//   t[b,o]   = sum_i q[o,i] sn[b,i]^2
//   d[b,o]   = 1 / sqrt(t / r2 + eps)                = rsqrt(sum_{i,t} W^2 + eps) of the literal form
//   c[b,o]   = d / sqrt(r2)
//   W[b,o,i,t] = K[o,i,t] * (c[b,o] sn[b,i])
// Passes: (1) q per (bk, o, i) and ss[b] = sum_i s^2 per b; (2) c per (b, o) and sn per (b, i)
// (each thread sums the B partial ss itself: a fixed order, no atomics); (3) the weight-sized write.
// The small intermediates (q, ss, c, sn) are kept in double; W is rounded once, to T.
//
// ---- Backward (first order; G = dL/dW in W's layout) --------------------------------------------
// Both:      P[b,o,i] = sum_t G[b,o,i,t] K[o,i,t]
// Not demodulated:   dK = sum_{b in group} G s[b,i] gain,    ds[b,i] = gain sum_o P[b,o,i]
// Demodulated, with rho = sqrt(r2), by the chain rule through c = d / rho, d = (u + eps)^(-1/2),
// u = t / r2, t = sum_i q sn^2, r2 = sum_i q / (I T), q = sum_t K^2, sn = s m^(-1/2):
//   A[b,o]   = sum_i P[b,o,i] sn[b,i]                           (= dL/dc)
//   gd       = A / rho,   gu = -gd d^3 / 2,   gt = gu / r2
//   gr2      = -A d / (2 r2 rho) - gu t / r2^2
//   gq[o,i]  = sum_{b in group} (gt[b,o] sn[b,i]^2 + gr2[b,o] / (I T))
//   gsn[b,i] = sum_o (P[b,o,i] c[b,o] + 2 gt[b,o] q[o,i] sn[b,i])
//   gm       = -m^(-3/2) / 2 * sum_{b,i} gsn[b,i] s[b,i]
//   ds[b,i]  = gsn[b,i] m^(-1/2) + gm 2 s[b,i] / (B I)
//   dK[o,i,t] = sum_{b in group} G[b,o,i,t] c[b,o] sn[b,i] + 2 K[o,i,t] gq[o,i]
// ("group": every b for a shared kernel, b = bk for a batched one.) Passes: (1) P per (b, o, i);
// (2) c, gt, gr2 per (b, o); (3) gsn per (b, i) (ds directly when not demodulating); (4) the partial
// sums sum_i gsn s per b; (5) ds per (b, i); (6) gq and dK per (bk, o, i). Sums in double.
// Since W is invariant (up to eps) to a positive rescaling of a kernel row or of one sample's
// styles, dK[o] is orthogonal to K[o] and ds[b] to s[b]: the two chains above cancel in that
// direction, and the double accumulation keeps that cancellation accurate.
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

struct ModWeightDims {
  int64_t B, O, I, T;
  bool batched;     // K is [B, O, I, T] (else [1, O, I, T], shared by the batch)
  bool transposed;  // W is [B, I, O, T] (else [B, O, I, T])
  bool demodulate;
  double gain;  // used when !demodulate
  double eps;   // used when demodulate

  ENGINE_HD int64_t bk_count() const { return batched ? B : 1; }
  // Row (b, o, i) of K ([Bk, O, I]) and of W (in W's layout, [B, O, I] or [B, I, O]).
  ENGINE_HD int64_t krow(int64_t b, int64_t o, int64_t i) const { return ((batched ? b : 0) * O + o) * I + i; }
  ENGINE_HD int64_t wrow(int64_t b, int64_t o, int64_t i) const {
    return b * O * I + (transposed ? i * O + o : o * I + i);
  }
  // The samples whose weights use kernel bk: [b0, b1).
  ENGINE_HD int64_t group_begin(int64_t bk) const { return batched ? bk : 0; }
  ENGINE_HD int64_t group_end(int64_t bk) const { return batched ? bk + 1 : B; }
};

// The double scratch of the op, carved from one buffer of mw_scratch_size(d) elements: the
// forward uses q, ss, c, sn; the backward all of them.
struct ModWeightScratch {
  double *q, *ss, *c, *sn, *P, *cg, *gsn, *part;
};
ENGINE_HD int64_t mw_scratch_size(const ModWeightDims& d, bool backward) {
  const int64_t fwd = d.bk_count() * d.O * d.I + d.B + d.B * d.O + d.B * d.I;
  return backward ? fwd + d.B * d.O * d.I + 3 * d.B * d.O + d.B * d.I + d.B : fwd;
}
ENGINE_HD ModWeightScratch mw_scratch(const ModWeightDims& d, double* base, bool backward) {
  ModWeightScratch w{};
  w.q = base;
  w.ss = w.q + d.bk_count() * d.O * d.I;
  w.c = w.ss + d.B;
  w.sn = w.c + d.B * d.O;
  if (backward) {
    w.P = w.sn + d.B * d.I;
    w.cg = w.P + d.B * d.O * d.I;
    w.gsn = w.cg + 3 * d.B * d.O;
    w.part = w.gsn + d.B * d.I;
  }
  return w;
}

// 1 / sqrt(m), m = mean of s^2 over the whole [B, I] tensor, from the per-sample sums ss[b].
ENGINE_HD double mw_style_rsqrt(const ModWeightDims& d, const double* ss) {
  double m = 0;
  for (int64_t b = 0; b < d.B; ++b) m += ss[b];
  return 1.0 / ::sqrt(m / double(d.B * d.I));
}

// ---- Forward --------------------------------------------------------------------------------

// Unit j < Bk O I: q[j] = sum_t K[j, t]^2; unit Bk O I + b: ss[b] = sum_i s[b, i]^2.
template <typename T>
ENGINE_HD void mw_stats(const ModWeightDims& d, const T* K, const T* s, double* q, double* ss, int64_t j) {
  const int64_t nq = d.bk_count() * d.O * d.I;
  if (j < nq) {
    const T* k = K + j * d.T;
    double a = 0;
    for (int64_t t = 0; t < d.T; ++t) a += double(k[t]) * double(k[t]);
    q[j] = a;
  } else {
    const T* sb = s + (j - nq) * d.I;
    double a = 0;
    for (int64_t i = 0; i < d.I; ++i) a += double(sb[i]) * double(sb[i]);
    ss[j - nq] = a;
  }
}

// Unit j < B O: c[b, o] = d / sqrt(r2) (j = b O + o); unit B O + (b I + i): sn[b, i].
template <typename T>
ENGINE_HD void mw_rows(const ModWeightDims& d, const T* s, const double* q, const double* ss, double* c,
                       double* sn, int64_t j) {
  const double rs = mw_style_rsqrt(d, ss);
  if (j < d.B * d.O) {
    const int64_t b = j / d.O, o = j % d.O;
    const double* qo = q + d.krow(b, o, 0);
    const T* sb = s + b * d.I;
    double r2 = 0, t = 0;
    for (int64_t i = 0; i < d.I; ++i) {
      const double v = double(sb[i]) * rs;
      r2 += qo[i];
      t += qo[i] * v * v;
    }
    r2 /= double(d.I * d.T);
    c[j] = 1.0 / ::sqrt(t / r2 + d.eps) / ::sqrt(r2);
  } else {
    const int64_t k = j - d.B * d.O;
    sn[k] = double(s[k]) * rs;
  }
}

// Unit r: row r of W in W's layout (its T taps). c, sn unused (null) when not demodulating.
template <typename T>
ENGINE_HD void mw_write(const ModWeightDims& d, const T* K, const T* s, const double* c, const double* sn, T* W,
                        int64_t r) {
  int64_t b, o, i;
  if (d.transposed) {
    o = r % d.O;
    i = (r / d.O) % d.I;
    b = r / (d.O * d.I);
  } else {
    i = r % d.I;
    o = (r / d.I) % d.O;
    b = r / (d.O * d.I);
  }
  const T f = d.demodulate ? T(c[b * d.O + o] * sn[b * d.I + i]) : T(s[b * d.I + i] * T(d.gain));
  const T* k = K + d.krow(b, o, i) * d.T;
  T* w = W + r * d.T;
  for (int64_t t = 0; t < d.T; ++t) w[t] = k[t] * f;
}

// ---- Backward -------------------------------------------------------------------------------

// Unit j = (b O + o) I + i: P[j] = sum_t G[b,o,i,t] K[o,i,t].
template <typename T>
ENGINE_HD void mw_grad_p(const ModWeightDims& d, const T* G, const T* K, double* P, int64_t j) {
  const int64_t i = j % d.I, o = (j / d.I) % d.O, b = j / (d.O * d.I);
  const T* g = G + d.wrow(b, o, i) * d.T;
  const T* k = K + d.krow(b, o, i) * d.T;
  double a = 0;
  for (int64_t t = 0; t < d.T; ++t) a += double(g[t]) * double(k[t]);
  P[j] = a;
}

// Unit j = b O + o (demodulated only): cg[3 j ..] = (c, gt, gr2).
ENGINE_HD void mw_grad_rows(const ModWeightDims& d, const double* q, const double* sn, const double* P, double* cg,
                            int64_t j) {
  const int64_t b = j / d.O, o = j % d.O;
  const double* qo = q + d.krow(b, o, 0);
  const double* snb = sn + b * d.I;
  const double* pb = P + j * d.I;
  double r2 = 0, t = 0, A = 0;
  for (int64_t i = 0; i < d.I; ++i) {
    r2 += qo[i];
    t += qo[i] * snb[i] * snb[i];
    A += pb[i] * snb[i];
  }
  r2 /= double(d.I * d.T);
  const double rho = ::sqrt(r2);
  const double dd = 1.0 / ::sqrt(t / r2 + d.eps);
  const double gd = A / rho;
  const double gu = -0.5 * gd * dd * dd * dd;
  cg[3 * j] = dd / rho;
  cg[3 * j + 1] = gu / r2;
  cg[3 * j + 2] = -0.5 * A * dd / (r2 * rho) - gu * t / (r2 * r2);
}

// Unit j = b I + i. Demodulated: gsn[j] (cg from mw_grad_rows). Not demodulated: ds[j] itself,
// written to dsT (gsn, cg, q, sn unused).
template <typename T>
ENGINE_HD void mw_grad_sn(const ModWeightDims& d, const double* P, const double* cg, const double* q,
                          const double* sn, double* gsn, T* dsT, int64_t j) {
  const int64_t b = j / d.I, i = j % d.I;
  double a = 0;
  if (!d.demodulate) {
    for (int64_t o = 0; o < d.O; ++o) a += P[(b * d.O + o) * d.I + i];
    dsT[j] = T(a * d.gain);
    return;
  }
  const double v = sn[j];
  for (int64_t o = 0; o < d.O; ++o) {
    const double* r = cg + 3 * (b * d.O + o);
    a += P[(b * d.O + o) * d.I + i] * r[0] + 2.0 * r[1] * q[d.krow(b, o, i)] * v;
  }
  gsn[j] = a;
}

// Unit b: part[b] = sum_i gsn[b, i] s[b, i].
template <typename T>
ENGINE_HD void mw_grad_part(const ModWeightDims& d, const double* gsn, const T* s, double* part, int64_t b) {
  double a = 0;
  for (int64_t i = 0; i < d.I; ++i) a += gsn[b * d.I + i] * double(s[b * d.I + i]);
  part[b] = a;
}

// Unit j = b I + i: ds[j] through sn = s m^(-1/2).
template <typename T>
ENGINE_HD void mw_grad_s(const ModWeightDims& d, const double* ss, const double* gsn, const double* part, const T* s,
                         T* ds, int64_t j) {
  const double rs = mw_style_rsqrt(d, ss);
  double p = 0;
  for (int64_t b = 0; b < d.B; ++b) p += part[b];
  const double gm = -0.5 * rs * rs * rs * p;
  ds[j] = T(gsn[j] * rs + gm * 2.0 * double(s[j]) / double(d.B * d.I));
}

// Unit j = (bk O + o) I + i: the T taps of dK at row j (cg, q, sn null when not demodulating).
template <typename T>
ENGINE_HD void mw_grad_k(const ModWeightDims& d, const T* G, const T* K, const T* s, const double* cg,
                         const double* sn, T* dK, int64_t j) {
  const int64_t i = j % d.I, o = (j / d.I) % d.O, bk = j / (d.O * d.I);
  const int64_t b0 = d.group_begin(bk), b1 = d.group_end(bk);
  double gq = 0;
  if (d.demodulate) {
    const double inv_n = 1.0 / double(d.I * d.T);
    for (int64_t b = b0; b < b1; ++b) {
      const double* r = cg + 3 * (b * d.O + o);
      const double v = sn[b * d.I + i];
      gq += r[1] * v * v + r[2] * inv_n;
    }
  }
  const T* k = K + j * d.T;
  T* out = dK + j * d.T;
  for (int64_t t = 0; t < d.T; ++t) {
    double a = 0;
    for (int64_t b = b0; b < b1; ++b) {
      const double f = d.demodulate ? cg[3 * (b * d.O + o)] * sn[b * d.I + i] : double(s[b * d.I + i]) * d.gain;
      a += double(G[d.wrow(b, o, i) * d.T + t]) * f;
    }
    out[t] = T(a + 2.0 * double(k[t]) * gq);
  }
}

}  // namespace engine::kernels
