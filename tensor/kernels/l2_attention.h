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
// where dA_ij = dO_i . v_j and D_i = dO_i . out_i (softmax's backward).
#pragma once
#include "tensor/kernels/common.h"

namespace engine::kernels {

// Shapes and element strides of one call. q [B, Tq, H, d], k [B, Tk, H, d], v [B, Tk, H, dv]
// with strides (b, t, h, c) each; out and grad_out are contiguous [B, Tq, H * dv] (head n at
// channels [n dv, (n + 1) dv)); lse is contiguous [B, H, Tq].
struct L2AttnGeom {
  int64_t B = 0, Tq = 0, Tk = 0, H = 0, d = 0, dv = 0;
  int64_t qs[4] = {}, ks[4] = {}, vs[4] = {};
  double eps = 0;
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

}  // namespace engine::kernels
