"""ref_l2_attention.py: PyTorch reference of the fused L2 attention op l2_attention_fused
(tensor/ops_l2_attention.h) in both logit forms, from the definitions with plain autograd ops:

  distance     (the generator's, Note [L2 attention logits], nn/attention.cpp):
               l_ij = -sqrt(max((|q_i - k_j|^2 + eps) / d, eps / (2 d)))
  sq_distance  (the discriminator's, nn/disc_attention.h): l_ij = -|q_i - k_j|^2 / sqrt(d), the FULL
               squared distance (the op drops the row constant |q_i|^2 / sqrt(d), which softmax
               ignores: equal in exact arithmetic, so this also checks that claim)

out = softmax_j(l) v per batch and head; q [B, Tq, H, d], k [B, Tk, H, d], v [B, Tk, H, dv] ->
out [B, Tq, H * dv]. Cases (layout: parity_lib.py; C++ side tests/test_parity_l2_attention.cpp):
forward, first gradients and double backward, f32 and f64, untied q/k and tied (q = k, one input,
as the discriminator calls it), several 64-row query blocks.
"""
import torch

import parity_lib

F32 = torch.float32
F64 = torch.float64


def attn(q, k, v, form, eps=1e-6):
    b, tq, h, d = q.shape
    qp, kp, vp = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
    dist2 = ((qp[:, :, :, None, :] - kp[:, :, None, :, :]) ** 2).sum(-1)  # [B, H, Tq, Tk]
    if form == "sq":
        logits = -dist2 / d ** 0.5
    else:
        logits = -torch.sqrt(torch.clamp((dist2 + eps) / d, min=eps / (2 * d)))
    o = torch.softmax(logits, -1) @ vp  # [B, H, Tq, dv]
    return o.permute(0, 2, 1, 3).reshape(b, tq, -1)


def randn(*shape, dtype=F32):
    return torch.randn(shape, dtype=dtype)


def build(r):
    for form in ("sq", "dist"):
        # untied, Tq = 70 > one 64-row block, Tk != Tq, dv != d
        r.case(f"{form}.f32", lambda q, k, v, f=form: attn(q, k, v, f),
               [randn(2, 70, 2, 4), randn(2, 9, 2, 4), randn(2, 9, 2, 3)])
        r.case(f"{form}.f64", lambda q, k, v, f=form: attn(q, k, v, f),
               [randn(2, 5, 2, 3, dtype=F64), randn(2, 7, 2, 3, dtype=F64), randn(2, 7, 2, 2, dtype=F64)])
    # tied q = k (the discriminator's call), 16 tokens; f32 and f64
    r.case("sq.tied.f32", lambda x, v: attn(x, x, v, "sq"), [randn(2, 16, 2, 4), randn(2, 16, 2, 4)])
    r.case("sq.tied.f64", lambda x, v: attn(x, x, v, "sq"),
           [randn(2, 6, 2, 3, dtype=F64), randn(2, 6, 2, 3, dtype=F64)])


if __name__ == "__main__":
    parity_lib.main(__file__, 20261124, build)
