// l2_attention.h: the per-logit math of the fused L2-distance attention (Note [L2 attention
// logits], nn/attention.cpp; the op: tensor/ops_l2_attention.cpp), shared by the CPU loops
// (tensor/cpu/l2_attention.cpp, whole rows of keys vectorised) and the CUDA kernels
// (tensor/cuda/l2_attention.cu, one thread per query or key row).
//
// With c = 1/d, a_i = c (|q_i|^2 + eps), kn_j = c |k_j|^2 and S_ij = q_i . k_j:
//   u_ij = a_i + kn_j - 2c S_ij                  (= c (|q_i - k_j|^2 + eps))
//   l_ij = -sqrt(max(u_ij, c eps / 2))           (the logit; the floor keeps sqrt' finite)
//   A_ij = exp(l_ij - lse_i)                     (the attention weight, from the saved log-sum-exp)
//   G_ij = c dL/du_ij = -(A_ij (dA_ij - D_i)) (c/2) / sqrt(max(u, floor)), 0 below the floor,
// where dA_ij = dO_i . v_j and D_i = dO_i . out_i (softmax's backward). The gradients then follow
// from one assembly, dQ = 2 (Q rowsum_j(G) - G K), dK = 2 (K colsum_i(G) - G^T Q).
//
// The second logit form, L2AttnForm::sq_distance (the discriminator's attention, Note [L2 logits
// without the row constant], nn/disc_attention.h): with s = 1/sqrt(d) and kn_j = s |k_j|^2,
//   l_ij = 2s S_ij - kn_j                        (= -s |q_i - k_j|^2 + s |q_i|^2; the row constant
//                                                  s |q_i|^2 cancels in the softmax)
//   dl_ij/dq_i = 2s k_j,   dl_ij/dk_j = 2s (q_i - k_j),   dl_ij = A_ij (dA_ij - D_i),
// so with G_ij = -s dl_ij the same assembly gives dQ_i = -2 sum_j G_ij k_j = 2s sum_j dl_ij k_j
// (the Q rowsum(G) term is absent: l has no |q_i|^2 term) and
// dK_j = 2 (k_j sum_i G_ij - sum_i G_ij q_i) = 2s sum_i dl_ij (q_i - k_j). No eps, no floor: the
// logit is a polynomial, smooth everywhere (what R1's double backward needs).
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

// Shapes and element strides of one call. q [B, Tq, H, d], k [B, Tk, H, d], v [B, Tk, H, dv]
// with strides (b, t, h, c) each; out and grad_out are contiguous [B, Tq, H * dv] (head n at
// channels [n dv, (n + 1) dv)); lse is contiguous [B, H, Tq].
// Which logit: the generator's -sqrt(c (|q - k|^2 + eps)) or the discriminator's
// (2 q.k - |k|^2) / sqrt(d) (header comment).
enum class L2AttnForm : int { distance = 0, sq_distance = 1 };

struct L2AttnGeom {
  int64_t B = 0, Tq = 0, Tk = 0, H = 0, d = 0, dv = 0;
  int64_t qs[4] = {}, ks[4] = {}, vs[4] = {};
  double eps = 0;  // distance only
  L2AttnForm form = L2AttnForm::distance;
};

template <typename T>
ENGINE_HD T l2_sqrt(T v) {
#if defined(__CUDA_ARCH__)
  return sqrt(v);
#else
  return std::sqrt(v);
#endif
}

// u_ij from its parts (two_c = 2c).
template <typename T>
ENGINE_HD T l2_u(T a, T kn, T two_c, T S) {
  return a + kn - two_c * S;
}

// l_ij = -sqrt(max(u, floor_u)).
template <typename T>
ENGINE_HD T l2_logit(T u, T floor_u) {
  return -l2_sqrt(u < floor_u ? floor_u : u);  // std::max(u, floor_u), NaN kept
}

// G_ij = c dL/du_ij given s = sqrt(max(u, floor_u)) (half_c = c/2).
template <typename T>
ENGINE_HD T l2_grad_u(T A, T dA, T D, T half_c, T s, T u, T floor_u) {
  return u >= floor_u ? -(A * (dA - D)) * half_c / s : T(0);
}

// sq_distance: l_ij = 2s S_ij - kn_j (two_s = 2s, kn_j = s |k_j|^2), rounded as the unfused
// (2s (Q K^T)) - s |k|^2 of nn/disc_attention.cpp's fallback.
template <typename T>
ENGINE_HD T l2sq_logit(T S, T kn, T two_s) {
  return two_s * S - kn;
}

// sq_distance: G_ij = -s dl_ij = -s A_ij (dA_ij - D_i) (the assembly's coefficient, header comment).
template <typename T>
ENGINE_HD T l2sq_grad(T A, T dA, T D, T s) {
  return -(A * (dA - D)) * s;
}

}  // namespace engine::kernels
