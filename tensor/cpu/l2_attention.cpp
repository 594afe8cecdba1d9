// l2_attention.cpp (cpu): fused L2-distance attention, forward and backward (the formulas are in
// l2_attention.h). Work is split into (batch, head, block of query rows) tasks for the forward
// and (batch, head) tasks for the backward (dK and dV sum over all query rows of their head);
// each task uses its thread's scratch rows and single-threaded BLAS (cpu::gemm). q, k and v are
// read in place when their channel stride is 1 (a head of a projection's output, e.g. the q or k
// view of SelfAttention's [B, T, heads, 2, d]); otherwise a task packs them first.
#include "tensor/cpu/l2_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "tensor/cpu/gemm.h"
#include "tensor/kernels/reduce.h"
#include "tensor/kernels/softmax.h"
#include "tensor/tensor.h"

namespace engine::cpu {

namespace {

constexpr int64_t kRowBlock = 64;  // query rows per block: 64 x Tk floats of S and dA per thread

// A [rows, cols] matrix with unit column stride: (pointer, leading dimension).
template <typename T>
struct Mat {
  const T* p;
  int64_t ld;
};

// Rows [t0, t0 + rows) of head h of batch b of x (strides s: b, t, h, c): in place when the
// channel stride is 1 (and rows do not overlap), else copied into `scratch` (rows x cols).
template <typename T>
Mat<T> head_rows(const T* x, const int64_t* s, int64_t b, int64_t h, int64_t t0, int64_t rows, int64_t cols,
                 T* scratch) {
  const T* base = x + b * s[0] + h * s[2] + t0 * s[1];
  if ((s[3] == 1 || cols == 1) && (rows <= 1 || s[1] >= cols)) return {base, rows <= 1 ? cols : s[1]};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) scratch[r * cols + c] = base[r * s[1] + c * s[3]];
  return {scratch, cols};
}

// c |x_r|^2 for each row.
template <typename T>
void row_norms(Mat<T> x, int64_t rows, int64_t cols, double c, T* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = x.p + r * x.ld;
    T acc = T(0);
    for (int64_t j = 0; j < cols; ++j) acc += row[j] * row[j];
    out[r] = T(c) * acc;
  }
}

// The thread scratch, from the arena (one block per thread, taken before the parallel region).
template <typename T>
struct Scratch {
  Tensor holder;
  int64_t per_thread = 0;
  Scratch(int64_t threads, int64_t elements, DType dt) : per_thread(elements) {
    holder = empty({threads * elements}, opts(dt));
  }
  T* of(int thread) { return holder.data<T>() + int64_t(thread) * per_thread; }
};

template <typename T>
constexpr DType dtype_of() {
  return std::is_same_v<T, float> ? DType::f32 : DType::f64;
}

// The inner loops over one row of keys, as functions of plain scalars and pointers so that GCC
// vectorises them (inside the task loop it could not prove the bounds and pointers invariant).
// They are the whole cost of the op (a sqrt, an exp and, backward, a division per logit), so they
// are also compiled for AVX2 and AVX-512 and picked at load time (GCC function multi-versioning);
// no FMA is enabled, so every clone rounds like the SSE2 baseline and results do not depend on
// the CPU.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ENGINE_L2_CLONES __attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
#else
#define ENGINE_L2_CLONES
#endif
// Forward: row[j] = l_ij = -sqrt(max(a + kn_j - 2c S_ij, floor)), with a = c (|q_i|^2 + eps).
template <typename T>
ENGINE_L2_CLONES void logits_row(int64_t n, T a, const T* __restrict kn, T two_c, T floor_u, T* __restrict row) {
  ENGINE_REDUCE_SIMD
  for (int64_t j = 0; j < n; ++j) row[j] = kernels::l2_logit(kernels::l2_u(a, kn[j], two_c, row[j]), floor_u);
}

// Forward, sq_distance: row[j] = l_ij = 2s S_ij - kn_j.
template <typename T>
ENGINE_L2_CLONES void logits_row_sq(int64_t n, const T* __restrict kn, T two_s, T* __restrict row) {
  ENGINE_REDUCE_SIMD
  for (int64_t j = 0; j < n; ++j) row[j] = kernels::l2sq_logit(row[j], kn[j], two_s);
}

template <typename T>
ENGINE_L2_CLONES void exp_row(int64_t n, T m, T* __restrict row) {
  ENGINE_REDUCE_SIMD
  for (int64_t j = 0; j < n; ++j) row[j] = kernels::vexp(T(row[j] - m));
}

// Backward: srow holds S_ij on entry and A_ij on exit; grow holds dA_ij on entry and
// G_ij = c dL/du_ij on exit; cg += G (column sums).
template <typename T>
ENGINE_L2_CLONES void grad_row(int64_t n, T a, const T* __restrict kn, T two_c, T floor_u, T lse, T D, T half_c, T* __restrict srow,
              T* __restrict grow, T* __restrict cg) {
  ENGINE_REDUCE_SIMD
  for (int64_t j = 0; j < n; ++j) {
    const T u = kernels::l2_u(a, kn[j], two_c, srow[j]);
    const T s = -kernels::l2_logit(u, floor_u);
    const T A = kernels::vexp(T(-s - lse));
    const T gu = kernels::l2_grad_u(A, grow[j], D, half_c, s, u, floor_u);
    srow[j] = A;
    grow[j] = gu;
    cg[j] += gu;
  }
}

// Backward, sq_distance: as grad_row with l_ij = 2s S_ij - kn_j and G_ij = -s dl_ij.
template <typename T>
ENGINE_L2_CLONES void grad_row_sq(int64_t n, const T* __restrict kn, T two_s, T lse, T D, T sc, T* __restrict srow,
                                  T* __restrict grow, T* __restrict cg) {
  ENGINE_REDUCE_SIMD
  for (int64_t j = 0; j < n; ++j) {
    const T A = kernels::vexp(T(kernels::l2sq_logit(srow[j], kn[j], two_s) - lse));
    const T gu = kernels::l2sq_grad(A, grow[j], D, sc);
    srow[j] = A;
    grow[j] = gu;
    cg[j] += gu;
  }
}

}  // namespace

template <typename T>
void l2_attention_forward(const L2AttnGeom& g, const T* q, const T* k, const T* v, T* out, T* lse) {
  const int64_t R = std::min<int64_t>(kRowBlock, std::max<int64_t>(g.Tq, 1));
  const int64_t blocks = (g.Tq + R - 1) / R, tasks = g.B * g.H * blocks;
  const double c = 1.0 / double(g.d);
  const T floor_u = T(0.5 * c * g.eps), two_c = T(2.0 * c);
  const bool sq = g.form == kernels::L2AttnForm::sq_distance;
  const double sc = 1.0 / std::sqrt(double(g.d));  // sq_distance's s
  const T two_s = T(2.0 * sc);
  const int threads = omp_get_max_threads();
  // S [R, Tk], kn [Tk], inv [R], packed q [R, d], k [Tk, d], v [Tk, dv]
  const int64_t per = R * g.Tk + g.Tk + R + R * g.d + g.Tk * (g.d + g.dv);
  Scratch<T> scratch(threads, per, dtype_of<T>());
  const int64_t ldo = g.H * g.dv;
  const bool parallel = threads > 1 && tasks > 1 && double(g.B) * double(g.H) * double(g.Tq) * double(g.Tk) >= 16384.0;
  blas_single_thread();
#pragma omp parallel for schedule(dynamic) if (parallel)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t bh = task / blocks, blk = task % blocks, b = bh / g.H, h = bh % g.H;
    const int64_t i0 = blk * R, rb = std::min(R, g.Tq - i0);
    T* S = scratch.of(omp_get_thread_num());
    T* kn = S + R * g.Tk;
    T* inv = kn + g.Tk;
    T* qpack = inv + R;
    T* kpack = qpack + R * g.d;
    T* vpack = kpack + g.Tk * g.d;
    const Mat<T> Q = head_rows(q, g.qs, b, h, i0, rb, g.d, qpack);
    const Mat<T> K = head_rows(k, g.ks, b, h, 0, g.Tk, g.d, kpack);
    const Mat<T> V = head_rows(v, g.vs, b, h, 0, g.Tk, g.dv, vpack);
    row_norms(K, g.Tk, g.d, sq ? sc : c, kn);
    gemm<T>(false, true, rb, g.Tk, g.d, T(1), Q.p, Q.ld, K.p, K.ld, T(0), S, g.Tk);
    for (int64_t r = 0; r < rb; ++r) {
      T* row = S + r * g.Tk;
      if (sq) {
        logits_row_sq(g.Tk, kn, two_s, row);
      } else {
        T qn = T(0);
        for (int64_t j = 0; j < g.d; ++j) qn += Q.p[r * Q.ld + j] * Q.p[r * Q.ld + j];
        const T a = T(c) * qn + T(c * g.eps);
        logits_row(g.Tk, a, kn, two_c, floor_u, row);
      }
      const T m = kernels::line_max(row, g.Tk, int64_t(1));
      exp_row(g.Tk, m, row);
      const double s = kernels::lane_sum(g.Tk, [row](int64_t j) { return row[j]; });
      inv[r] = T(1.0 / s);
      lse[bh * g.Tq + i0 + r] = T(double(m) + std::log(s));
    }
    T* o = out + (b * g.Tq + i0) * ldo + h * g.dv;
    gemm<T>(false, false, rb, g.dv, g.Tk, T(1), S, g.Tk, V.p, V.ld, T(0), o, ldo);
    for (int64_t r = 0; r < rb; ++r)
      for (int64_t j = 0; j < g.dv; ++j) o[r * ldo + j] *= inv[r];
  }
}

template <typename T>
void l2_attention_backward(const L2AttnGeom& g, const T* grad_out, const T* q, const T* k, const T* v, const T* out,
                           const T* lse, T* dq, T* dk, T* dv) {
  const int64_t R = std::min<int64_t>(kRowBlock, std::max<int64_t>(g.Tq, 1));
  const int64_t blocks = (g.Tq + R - 1) / R, tasks = g.B * g.H;
  const double c = 1.0 / double(g.d);
  const T floor_u = T(0.5 * c * g.eps), two_c = T(2.0 * c), half_c = T(0.5 * c);
  const bool sq = g.form == kernels::L2AttnForm::sq_distance;
  const double sc = 1.0 / std::sqrt(double(g.d));  // sq_distance's s
  const T two_s = T(2.0 * sc);
  const int threads = omp_get_max_threads();
  // S [R, Tk], dA [R, Tk], kn [Tk], cg [Tk], rg [R], D [R], packed q [R, d], k [Tk, d], v [Tk, dv]
  const int64_t per = 2 * R * g.Tk + 2 * g.Tk + 2 * R + R * g.d + g.Tk * (g.d + g.dv);
  Scratch<T> scratch(threads, per, dtype_of<T>());
  const int64_t ldo = g.H * g.dv, ldq = g.H * g.d;
  const bool parallel = threads > 1 && tasks > 1 && double(g.B) * double(g.H) * double(g.Tq) * double(g.Tk) >= 16384.0;
  blas_single_thread();
#pragma omp parallel for schedule(dynamic) if (parallel)
  for (int64_t bh = 0; bh < tasks; ++bh) {
    const int64_t b = bh / g.H, h = bh % g.H;
    T* S = scratch.of(omp_get_thread_num());
    T* dA = S + R * g.Tk;
    T* kn = dA + R * g.Tk;
    T* cg = kn + g.Tk;
    T* rg = cg + g.Tk;
    T* D = rg + R;
    T* qpack = D + R;
    T* kpack = qpack + R * g.d;
    T* vpack = kpack + g.Tk * g.d;
    const Mat<T> K = head_rows(k, g.ks, b, h, 0, g.Tk, g.d, kpack);
    const Mat<T> V = head_rows(v, g.vs, b, h, 0, g.Tk, g.dv, vpack);
    row_norms(K, g.Tk, g.d, sq ? sc : c, kn);
    std::fill(cg, cg + g.Tk, T(0));
    T* dk_bh = dk ? dk + b * g.Tk * ldq + h * g.d : nullptr;
    T* dv_bh = dv ? dv + b * g.Tk * ldo + h * g.dv : nullptr;
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t i0 = blk * R, rb = std::min(R, g.Tq - i0);
      const Mat<T> Q = head_rows(q, g.qs, b, h, i0, rb, g.d, qpack);
      const T* dO = grad_out + (b * g.Tq + i0) * ldo + h * g.dv;
      const T* O = out + (b * g.Tq + i0) * ldo + h * g.dv;
      for (int64_t r = 0; r < rb; ++r) {
        T acc = T(0);
        for (int64_t j = 0; j < g.dv; ++j) acc += dO[r * ldo + j] * O[r * ldo + j];
        D[r] = acc;
      }
      gemm<T>(false, true, rb, g.Tk, g.dv, T(1), dO, ldo, V.p, V.ld, T(0), dA, g.Tk);
      gemm<T>(false, true, rb, g.Tk, g.d, T(1), Q.p, Q.ld, K.p, K.ld, T(0), S, g.Tk);
      for (int64_t r = 0; r < rb; ++r) {
        const T L = lse[bh * g.Tq + i0 + r], Dr = D[r];
        T* srow = S + r * g.Tk;
        T* grow = dA + r * g.Tk;
        if (sq) {
          grad_row_sq(g.Tk, kn, two_s, L, Dr, T(sc), srow, grow, cg);
          continue;  // no Q rowsum(G) term (kernels/l2_attention.h)
        }
        T qn = T(0);
        for (int64_t j = 0; j < g.d; ++j) qn += Q.p[r * Q.ld + j] * Q.p[r * Q.ld + j];
        const T a = T(c) * qn + T(c * g.eps);
        grad_row(g.Tk, a, kn, two_c, floor_u, L, Dr, half_c, srow, grow, cg);
        rg[r] = T(kernels::lane_sum(g.Tk, [grow](int64_t j) { return grow[j]; }));
      }
      if (dv_bh) gemm<T>(true, false, g.Tk, g.dv, rb, T(1), S, g.Tk, dO, ldo, blk == 0 ? T(0) : T(1), dv_bh, ldo);
      if (dq) {
        T* dq_b = dq + (b * g.Tq + i0) * ldq + h * g.d;
        gemm<T>(false, false, rb, g.d, g.Tk, T(-2), dA, g.Tk, K.p, K.ld, T(0), dq_b, ldq);
        if (!sq)
          for (int64_t r = 0; r < rb; ++r)
            for (int64_t j = 0; j < g.d; ++j) dq_b[r * ldq + j] += T(2) * Q.p[r * Q.ld + j] * rg[r];
      }
      if (dk_bh) gemm<T>(true, false, g.Tk, g.d, rb, T(-2), dA, g.Tk, Q.p, Q.ld, blk == 0 ? T(0) : T(1), dk_bh, ldq);
    }
    if (dk_bh)
      for (int64_t j = 0; j < g.Tk; ++j)
        for (int64_t e = 0; e < g.d; ++e) dk_bh[j * ldq + e] += T(2) * K.p[j * K.ld + e] * cg[j];
  }
}

template void l2_attention_forward<float>(const L2AttnGeom&, const float*, const float*, const float*, float*, float*);
template void l2_attention_forward<double>(const L2AttnGeom&, const double*, const double*, const double*, double*,
                                           double*);
template void l2_attention_backward<float>(const L2AttnGeom&, const float*, const float*, const float*, const float*,
                                           const float*, const float*, float*, float*, float*);
template void l2_attention_backward<double>(const L2AttnGeom&, const double*, const double*, const double*,
                                            const double*, const double*, const double*, double*, double*, double*);

}  // namespace engine::cpu
