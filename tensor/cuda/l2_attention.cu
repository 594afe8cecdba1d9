// l2_attention.cu: the fused L2-distance attention on CUDA (the math: tensor/kernels/l2_attention.h),
// simple kernels that never hold a Tq x Tk matrix:
//
//   forward     one thread per (b, h, query i): an online softmax over the keys (running max m,
//               running sum, the output row rescaled when m grows; Milakov & Gimelshein 2018),
//               then out_i /= sum and lse_i = m + log(sum).
//   backward    1. one thread per (b, h, i): D_i = dO_i . out_i and, if wanted, dq_i, recomputing
//                  A_ij from q, k and lse_i over the keys;
//               2. one thread per (b, h, key j): dv_j = sum_i A_ij dO_i and dk_j = 2 (k_j colsum_i G
//                  - sum_i G_ij q_i), recomputing A_ij and G_ij over the queries.
// Both logit forms (kernels::L2AttnForm): the form is uniform over a launch, so the branch on it
// never diverges.
// Every output row is written by one thread, summing in a fixed order: deterministic, no atomics.
// Each thread rereads its rows from global memory (a tiled shared-memory version is the obvious
// optimisation, outside the backend's kernel rules today).
#include "tensor/cuda/l2_attention_launch.h"
#include "tensor/cuda/launch.cuh"
#include "tensor/kernels/reduce.h"

namespace engine::cuda {

namespace {

template <typename T>
ENGINE_KERNEL T l2_log(T v) {
#if defined(__CUDA_ARCH__)
  return log(v);
#else
  return std::log(v);
#endif
}

// Dot product of two strided rows of n elements.
template <typename T>
ENGINE_KERNEL T dot(const T* a, int64_t sa, const T* b, int64_t sb, int64_t n) {
  T acc = T(0);
  for (int64_t e = 0; e < n; ++e) acc += a[e * sa] * b[e * sb];
  return acc;
}

}  // namespace

// Named, not anonymous: the kernels' lambdas capture a FormConsts, and a capture whose type has
// internal linkage draws -Wsubobject-linkage.
namespace l2_attention_detail {

// The per-form constants of the backward (kernels/l2_attention.h).
template <typename T>
struct FormConsts {
  bool sq;
  T two_c, floor_u, half_c, two_s, s;
};

// A_ij and G_ij of either form from the row term a, kn_j, S_ij, lse_i, dA_ij and D_i.
template <typename T>
ENGINE_KERNEL T weight_and_grad(const FormConsts<T>& f, T a, T kn, T S, T L, T dA, T Di, T& A) {
  if (f.sq) {
    A = kernels::sexp(T(kernels::l2sq_logit(S, kn, f.two_s) - L));
    return kernels::l2sq_grad(A, dA, Di, f.s);
  }
  const T u = kernels::l2_u(a, kn, f.two_c, S);
  const T s = -kernels::l2_logit(u, f.floor_u);
  A = kernels::sexp(T(-s - L));
  return kernels::l2_grad_u(A, dA, Di, f.half_c, s, u, f.floor_u);
}

}  // namespace l2_attention_detail

template <typename T>
void launch_l2_attention_forward(const kernels::L2AttnGeom& g, const T* q, const T* k, const T* v, T* out, T* lse,
                                 Stream stream) {
  const kernels::L2AttnGeom G = g;
  const double c = 1.0 / double(g.d);
  const T tc = T(c), ceps = T(c * g.eps), floor_u = T(0.5 * c * g.eps), two_c = T(2.0 * c);
  const bool sq = g.form == kernels::L2AttnForm::sq_distance;
  const double sc = 1.0 / std::sqrt(double(g.d));
  const T kc = sq ? T(sc) : tc, two_s = T(2.0 * sc);  // kn_j = kc |k_j|^2
  launch_elements(
      g.B * g.H * g.Tq,
      [=] ENGINE_KERNEL(int64_t e) {
        const int64_t i = e % G.Tq, bh = e / G.Tq, h = bh % G.H, b = bh / G.H;
        const T* qi = q + b * G.qs[0] + i * G.qs[1] + h * G.qs[2];
        const T a = sq ? T(0) : tc * dot(qi, G.qs[3], qi, G.qs[3], G.d) + ceps;
        T* o = out + (b * G.Tq + i) * G.H * G.dv + h * G.dv;
        T m = T(0), sum = T(0);
        for (int64_t j = 0; j < G.Tk; ++j) {
          const T* kj = k + b * G.ks[0] + j * G.ks[1] + h * G.ks[2];
          const T* vj = v + b * G.vs[0] + j * G.vs[1] + h * G.vs[2];
          const T kn = kc * dot(kj, G.ks[3], kj, G.ks[3], G.d);
          const T S = dot(qi, G.qs[3], kj, G.ks[3], G.d);
          const T l =
              sq ? kernels::l2sq_logit(S, kn, two_s) : kernels::l2_logit(kernels::l2_u(a, kn, two_c, S), floor_u);
          if (j == 0 || l > m) {
            // A new maximum: rescale what was summed so far (nothing at j = 0).
            const T scale = j == 0 ? T(0) : kernels::sexp(T(m - l));
            sum *= scale;
            for (int64_t t = 0; t < G.dv; ++t) o[t] = j == 0 ? T(0) : o[t] * scale;
            m = l;
          }
          const T p = kernels::sexp(T(l - m));
          sum += p;
          for (int64_t t = 0; t < G.dv; ++t) o[t] += p * vj[t * G.vs[3]];
        }
        const T inv = T(1) / sum;
        for (int64_t t = 0; t < G.dv; ++t) o[t] *= inv;
        lse[e] = m + l2_log(sum);
      },
      stream);
}

template <typename T>
void launch_l2_attention_backward(const kernels::L2AttnGeom& g, const T* grad_out, const T* q, const T* k, const T* v,
                                  const T* out, const T* lse, T* D, T* dq, T* dk, T* dv, Stream stream) {
  const kernels::L2AttnGeom G = g;
  const double c = 1.0 / double(g.d);
  const T tc = T(c), ceps = T(c * g.eps), floor_u = T(0.5 * c * g.eps), two_c = T(2.0 * c), half_c = T(0.5 * c);
  const bool sq = g.form == kernels::L2AttnForm::sq_distance;
  const double sc = 1.0 / std::sqrt(double(g.d));
  const T kc = sq ? T(sc) : tc, two_s = T(2.0 * sc), ts = T(sc);  // kn_j = kc |k_j|^2
  const int64_t ldo = g.H * g.dv;
  const l2_attention_detail::FormConsts<T> f{sq, two_c, floor_u, half_c, two_s, ts};
  // 1. per query row: D_i and dq_i
  launch_elements(
      g.B * g.H * g.Tq,
      [=] ENGINE_KERNEL(int64_t e) {
        const int64_t i = e % G.Tq, bh = e / G.Tq, h = bh % G.H, b = bh / G.H;
        const T* dOi = grad_out + (b * G.Tq + i) * ldo + h * G.dv;
        const T Di = dot(dOi, int64_t(1), out + (b * G.Tq + i) * ldo + h * G.dv, int64_t(1), G.dv);
        D[e] = Di;
        if (!dq) return;
        const T* qi = q + b * G.qs[0] + i * G.qs[1] + h * G.qs[2];
        const T a = sq ? T(0) : tc * dot(qi, G.qs[3], qi, G.qs[3], G.d) + ceps;
        const T L = lse[e];
        T* dqi = dq + ((b * G.Tq + i) * G.H + h) * G.d;
        for (int64_t t = 0; t < G.d; ++t) dqi[t] = T(0);
        T rg = T(0);
        for (int64_t j = 0; j < G.Tk; ++j) {
          const T* kj = k + b * G.ks[0] + j * G.ks[1] + h * G.ks[2];
          const T* vj = v + b * G.vs[0] + j * G.vs[1] + h * G.vs[2];
          T A;
          const T kn = kc * dot(kj, G.ks[3], kj, G.ks[3], G.d), S = dot(qi, G.qs[3], kj, G.ks[3], G.d);
          const T gu =
              l2_attention_detail::weight_and_grad(f, a, kn, S, L, dot(dOi, int64_t(1), vj, G.vs[3], G.dv), Di, A);
          rg += gu;
          for (int64_t t = 0; t < G.d; ++t) dqi[t] -= T(2) * gu * kj[t * G.ks[3]];
        }
        if (!sq)  // sq_distance has no Q rowsum(G) term (kernels/l2_attention.h)
          for (int64_t t = 0; t < G.d; ++t) dqi[t] += T(2) * qi[t * G.qs[3]] * rg;
      },
      stream);
  if (!dk && !dv) return;
  // 2. per key row: dk_j and dv_j (reads D from step 1, ordered on the stream)
  launch_elements(
      g.B * g.H * g.Tk,
      [=] ENGINE_KERNEL(int64_t e) {
        const int64_t j = e % G.Tk, bh = e / G.Tk, h = bh % G.H, b = bh / G.H;
        const T* kj = k + b * G.ks[0] + j * G.ks[1] + h * G.ks[2];
        const T* vj = v + b * G.vs[0] + j * G.vs[1] + h * G.vs[2];
        const T kn = kc * dot(kj, G.ks[3], kj, G.ks[3], G.d);
        T* dkj = dk ? dk + ((b * G.Tk + j) * G.H + h) * G.d : nullptr;
        T* dvj = dv ? dv + ((b * G.Tk + j) * G.H + h) * G.dv : nullptr;
        if (dkj)
          for (int64_t t = 0; t < G.d; ++t) dkj[t] = T(0);
        if (dvj)
          for (int64_t t = 0; t < G.dv; ++t) dvj[t] = T(0);
        T cg = T(0);
        for (int64_t i = 0; i < G.Tq; ++i) {
          const T* qi = q + b * G.qs[0] + i * G.qs[1] + h * G.qs[2];
          const T* dOi = grad_out + (b * G.Tq + i) * ldo + h * G.dv;
          const T a = sq ? T(0) : tc * dot(qi, G.qs[3], qi, G.qs[3], G.d) + ceps;
          T A;
          const T gu = l2_attention_detail::weight_and_grad(f, a, kn, dot(qi, G.qs[3], kj, G.ks[3], G.d),
                                                            lse[bh * G.Tq + i], dot(dOi, int64_t(1), vj, G.vs[3], G.dv),
                                                            D[bh * G.Tq + i], A);
          if (dvj)
            for (int64_t t = 0; t < G.dv; ++t) dvj[t] += A * dOi[t];
          if (!dkj) continue;
          cg += gu;
          for (int64_t t = 0; t < G.d; ++t) dkj[t] -= T(2) * gu * qi[t * G.qs[3]];
        }
        if (dkj)
          for (int64_t t = 0; t < G.d; ++t) dkj[t] += T(2) * kj[t * G.ks[3]] * cg;
      },
      stream);
}

template void launch_l2_attention_forward<float>(const kernels::L2AttnGeom&, const float*, const float*, const float*,
                                                 float*, float*, Stream);
template void launch_l2_attention_forward<double>(const kernels::L2AttnGeom&, const double*, const double*,
                                                  const double*, double*, double*, Stream);
template void launch_l2_attention_backward<float>(const kernels::L2AttnGeom&, const float*, const float*, const float*,
                                                  const float*, const float*, const float*, float*, float*, float*,
                                                  float*, Stream);
template void launch_l2_attention_backward<double>(const kernels::L2AttnGeom&, const double*, const double*,
                                                   const double*, const double*, const double*, const double*, double*,
                                                   double*, double*, double*, Stream);

}  // namespace engine::cuda
