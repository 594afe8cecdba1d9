// l2_attention.h (cpu): the fused L2-distance attention kernels behind l2_attention_fused
// (tensor/ops_l2_attention.cpp; the math of Note [L2 attention logits], nn/attention.cpp).
//
// Per (batch, head) and per block of query rows, never the whole Tq x Tk matrix:
//   forward   S = Q K^T (GEMM);  u = c (|q_i|^2 + |k_j|^2 - 2 S + eps), c = 1/d;
//             l = -sqrt(max(u, c eps / 2));  P = exp(l - max_j l);  out = (P V) / sum_j P;
//             lse_i = max_j l + log sum_j P   (saved: it recreates A = exp(l - lse) in backward)
//   backward  A recomputed from Q, K and lse;  dA = dO V^T;  D_i = dO_i . out_i;
//             dl = A (dA - D);  G = c dL/du = -c dl / (2 sqrt(u)) [u >= c eps / 2];
//             dQ = 2 (Q rowsum(G) - G K);  dK = 2 (K colsum(G) - G^T Q);  dV = A^T dO
// The discriminator's form (g.form == sq_distance, kernels/l2_attention.h) changes only the
// per-logit lines: kn_j = s |k_j|^2 (s = 1/sqrt(d)), l = 2s S - kn (no a_i, no floor), G = -s dl,
// and dQ = 2 (- G K) (no Q rowsum(G) term).
// Memory: a block of rows of S and dA per thread; nothing of size Tq x Tk outlives a block.
#pragma once
#include <cstdint>

#include "tensor/kernels/l2_attention.h"

namespace engine::cpu {

// Shapes and strides of one call: kernels::L2AttnGeom (tensor/kernels/l2_attention.h).
using L2AttnGeom = kernels::L2AttnGeom;

template <typename T>
void l2_attention_forward(const L2AttnGeom& g, const T* q, const T* k, const T* v, T* out, T* lse);

// dq, dk, dv are contiguous [B, Tq, H, d], [B, Tk, H, d], [B, Tk, H, dv]; any may be null (not
// needed). Reads out and lse of the forward.
template <typename T>
void l2_attention_backward(const L2AttnGeom& g, const T* grad_out, const T* q, const T* k, const T* v, const T* out,
                           const T* lse, T* dq, T* dk, T* dv);

}  // namespace engine::cpu
