"""ref_moe.py: PyTorch reference of Aurora's sparse MoE FFN (docs/aurora-spec.md sections 3.3, 5.3, 6).

Written from the spec, and deliberately NOT with the engine's algorithm: the engine sorts tokens by
expert and runs each expert on its segment; here EVERY expert runs on EVERY token (dense), and the
top-1 expert is picked with a one-hot mask. The router is evaluated as the released model does it,
a grouped 1x1 convolution over the batch (conv1d with groups = B on [1, B*C, T]), not as a bmm.

Usage: ref_moe.py DIR CASE...   For each CASE, reads
    DIR/CASE.weights.safetensors   the module's state_dict, written by nn::save_state_dict
    DIR/CASE.inputs.safetensors    x [B,T,C], w [B,w_dim], gy [B,T,C], gz [], gaux [];
                                   metadata: num_experts, hidden, lr_mul, demod_eps
and writes DIR/CASE.out.safetensors:
    out/y, out/z_loss, out/aux_loss, out/logits, out/expert_ids (i64 [B,T]),
    out/counts (i64 [B,E], tokens of image b routed to e, counted from the one-hot mask),
    out/top2_gap (smallest gap between the best and second-best logit: routing robustness),
    grad/x, grad/w, grad/<every parameter name>: the gradients of
        S = sum(y * gy) + gz * z_loss + gaux * aux_loss
    (every parameter is in the graph, so idle experts get exact zeros).
All computation is in the dtype of the inputs (f32 or f64).
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def equal_linear(x, weight, bias, lr_mul):
    """Equalized-lr dense layer: weight * lr_mul / sqrt(fan_in), bias * lr_mul."""
    gain = lr_mul / math.sqrt(weight.shape[1])
    return F.linear(x, weight * gain, bias * lr_mul)


def router_logits(x, w, p, lr_mul, eps):
    """1x1 modulated + demodulated conv C -> E, then lrelu(0.2)*sqrt(2) (spec 3.3, 6)."""
    B, T, C = x.shape
    style = equal_linear(w, p["router.style.weight"], p["router.style.bias"], lr_mul)  # [B, C]
    k = p["router.weight"]  # [E, C]
    E = k.shape[0]
    k = k * k.square().mean(dim=1, keepdim=True).rsqrt()
    style = style * style.square().mean().rsqrt()
    wb = k.unsqueeze(0) * style.unsqueeze(1)  # [B, E, C]
    wb = wb * (wb.square().sum(dim=2, keepdim=True) + eps).rsqrt()
    # Grouped conv over the batch, as the released layer (batch folded into channels).
    xin = x.permute(0, 2, 1).reshape(1, B * C, T)
    out = F.conv1d(xin, wb.reshape(B * E, C, 1), groups=B).reshape(B, E, T).permute(0, 2, 1)
    out = out + (p["router.bias"] * lr_mul)
    return F.leaky_relu(out, 0.2) * math.sqrt(2.0)


def expert(x, p, e, hidden, lr_mul):
    h = equal_linear(x, p[f"experts.{e}.w1.weight"], p[f"experts.{e}.w1.bias"], lr_mul)
    u, g = h[..., :hidden], h[..., hidden:]
    a = u * F.gelu(g)  # erf GELU (approximate='none')
    return equal_linear(a, p[f"experts.{e}.w2.weight"], p[f"experts.{e}.w2.bias"], lr_mul)


def moe(x, w, p, E, hidden, lr_mul, eps):
    r = router_logits(x, w, p, lr_mul, eps)  # [B, T, E]
    probs = torch.softmax(r, dim=-1)
    ids = torch.argmax(probs, dim=-1)  # [B, T]
    mask = F.one_hot(ids, E).to(x.dtype)  # [B, T, E]
    dense = torch.stack([expert(x, p, e, hidden, lr_mul) for e in range(E)], dim=2)  # [B, T, E, C]
    chosen = (dense * mask.unsqueeze(-1)).sum(dim=2)
    y = chosen * probs.max(dim=-1).values.unsqueeze(-1)
    # Losses, per image (routing group) as the released load_balancing_loss_func.
    z_loss = torch.logsumexp(r, dim=-1).square().mean()
    f = mask.mean(dim=1)  # [B, E], no gradient (built from argmax)
    P = probs.mean(dim=1)
    aux_loss = (f * P).mean() * (E * E)
    return y, z_loss, aux_loss, r, ids, mask


def run_case(d, case):
    params, _ = safetensors_io.load(os.path.join(d, case + ".weights.safetensors"))
    inputs, meta = safetensors_io.load(os.path.join(d, case + ".inputs.safetensors"))
    E, hidden = int(meta["num_experts"]), int(meta["hidden"])
    lr_mul, eps = float(meta["lr_mul"]), float(meta["demod_eps"])
    x = inputs["x"].clone().requires_grad_(True)
    w = inputs["w"].clone().requires_grad_(True)
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    y, z_loss, aux_loss, r, ids, mask = moe(x, w, p, E, hidden, lr_mul, eps)
    S = (y * inputs["gy"]).sum() + inputs["gz"] * z_loss + inputs["gaux"] * aux_loss
    names = list(p.keys())
    grads = torch.autograd.grad(S, [x, w] + [p[n] for n in names])
    top2 = torch.topk(r.detach(), 2, dim=-1).values
    out = {
        "out/y": y.detach(),
        "out/z_loss": z_loss.detach(),
        "out/aux_loss": aux_loss.detach(),
        "out/logits": r.detach(),
        "out/expert_ids": ids,
        "out/counts": mask.sum(dim=1).to(torch.int64),
        "out/top2_gap": (top2[..., 0] - top2[..., 1]).min().reshape(()),
        "grad/x": grads[0],
        "grad/w": grads[1],
    }
    for n, g in zip(names, grads[2:]):
        out["grad/" + n] = g
    safetensors_io.save(os.path.join(d, case + ".out.safetensors"), out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: ref_moe.py DIR CASE...")
    torch.manual_seed(0)
    for c in sys.argv[2:]:
        run_case(sys.argv[1], c)
