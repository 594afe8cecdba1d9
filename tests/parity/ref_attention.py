"""ref_attention.py: PyTorch reference of Aurora's image attention (docs/aurora-spec.md section 5).

Written from the spec, in the released model's style and NOT with the engine's algorithm:
  * logits are -torch.cdist(q, k, p=2) * d**-0.5 on [(B*heads), T, d] (as the released
    QKVAttention), where the engine uses one augmented GEMM with an eps (Note [L2 attention logits]);
  * the self-attention q/k split is done the released way: heads are split first from the
    [B, T, 2*inner] output (head n owns 2*d channels), then q = the first d, k = the last d;
  * the modulated output projection is a grouped conv1d over the batch (batch folded into channels);
  * the 1x1 convs of ResidualAttn are F.conv2d on [B, C, H, W] (the engine uses GEMMs on tokens).

Usage: ref_attention.py DIR CASE...   For each CASE, reads
    DIR/CASE.weights.safetensors   the module's state_dict (nn::save_state_dict)
    DIR/CASE.inputs.safetensors    x, w, t (text tokens; not for kind=self), gy (grad of the output);
                                   metadata: kind (self | cross | block | resattn), heads, head_dim,
                                   lr_mul, demod_eps, hidden (dense GEGLU), groups, gain, depth
and writes DIR/CASE.out.safetensors: out/y, grad/x, grad/w, grad/t (when used) and grad/<every
parameter name>, the gradients of S = sum(y * gy). Parameters that do not reach y (none here)
would get zeros. All computation is in the dtype of the inputs (f32 or f64).
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


class Ctx:
    def __init__(self, p, meta):
        self.p = p
        self.heads = int(meta["heads"])
        self.head_dim = int(meta["head_dim"])
        self.lr_mul = float(meta["lr_mul"])
        self.demod_eps = float(meta["demod_eps"])
        self.hidden = int(meta.get("hidden", "0"))
        self.groups = int(meta.get("groups", "1"))
        self.gain = float(meta.get("gain", "1"))
        self.depth = int(meta.get("depth", "1"))


def j(pre, name):
    """Full parameter name: prefix.name (no prefix at the top level)."""
    return f"{pre}.{name}" if pre else name


def equal_linear(c, x, name, bias=True):
    """Equalized-lr dense layer: weight * lr_mul / sqrt(fan_in), bias * lr_mul."""
    wgt = c.p[name + ".weight"]
    gain = c.lr_mul / math.sqrt(wgt.shape[1])
    b = c.p[name + ".bias"] * c.lr_mul if bias else None
    return F.linear(x, wgt * gain, b)


def split_heads(t, heads):
    """b n (h d) -> (b h) n d"""
    B, N, HD = t.shape
    return t.reshape(B, N, heads, HD // heads).permute(0, 2, 1, 3).reshape(B * heads, N, HD // heads)


def merge_heads(t, heads):
    """(b h) n d -> b n (h d)"""
    BH, N, D = t.shape
    return t.reshape(BH // heads, heads, N, D).permute(0, 2, 1, 3).reshape(BH // heads, N, heads * D)


def l2_attend(q, k, v, head_dim):
    """Spec 5.1: softmax_j(-||q_i - k_j||_2 / sqrt(d)) v, with torch.cdist as released."""
    logits = -torch.cdist(q, k, p=2) * head_dim ** -0.5
    return torch.softmax(logits, dim=-1) @ v


def modulated_linear(c, x, w, name):
    """1x1 w-modulated, demodulated linear with bias over tokens (spec 3.2-3.3), as a grouped conv1d."""
    B, T, Cin = x.shape
    style = equal_linear(c, w, j(name, "style"))  # [B, Cin], bias initialised to 1
    k = c.p[name + ".weight"]  # [Cout, Cin]
    Cout = k.shape[0]
    k = k * k.square().mean(dim=1, keepdim=True).rsqrt()
    style = style * style.square().mean().rsqrt()
    wb = k.unsqueeze(0) * style.unsqueeze(1)  # [B, Cout, Cin]
    wb = wb * (wb.square().sum(dim=2, keepdim=True) + c.demod_eps).rsqrt()
    xin = x.permute(0, 2, 1).reshape(1, B * Cin, T)
    y = F.conv1d(xin, wb.reshape(B * Cout, Cin, 1), groups=B).reshape(B, Cout, T).permute(0, 2, 1)
    return y + c.p[name + ".bias"] * c.lr_mul


def self_attention(c, h, w, pre):
    H, d = c.heads, c.head_dim
    qk = split_heads(equal_linear(c, h, j(pre, "to_qk"), bias=False), H)  # [(B H), T, 2d]
    q, k = qk[..., :d], qk[..., d:]
    v = split_heads(equal_linear(c, h, j(pre, "to_v"), bias=False), H)
    out = merge_heads(l2_attend(q, k, v, d), H)
    return modulated_linear(c, out, w, j(pre, "proj_out"))


def cross_attention(c, h, t, pre):
    H, d = c.heads, c.head_dim
    q = split_heads(equal_linear(c, h, j(pre, "to_q"), bias=False), H)
    k, v = equal_linear(c, t, j(pre, "to_kv"), bias=False).chunk(2, dim=2)
    out = merge_heads(l2_attend(q, split_heads(k, H), split_heads(v, H), d), H)
    return equal_linear(c, out, j(pre, "proj_out"))


def layer_norm(c, x, name):
    return F.layer_norm(x, (x.shape[-1],), c.p[name + ".weight"], c.p[name + ".bias"], 1e-5)


def geglu_ffn(c, h, pre):
    u, g = equal_linear(c, h, j(pre, "w1")).chunk(2, dim=-1)
    return equal_linear(c, u * F.gelu(g), j(pre, "w2"))


def attention_block(c, x, w, t, pre):
    x = x + self_attention(c, layer_norm(c, x, j(pre, "norm1")), w, j(pre, "self_attn"))
    x = x + cross_attention(c, layer_norm(c, x, j(pre, "norm2")), t, j(pre, "cross_attn"))
    return x + geglu_ffn(c, layer_norm(c, x, j(pre, "norm3")), j(pre, "ff"))


def conv1x1(c, x, name):
    wgt = c.p[name + ".weight"]  # [out, in, 1, 1]
    return F.conv2d(x, wgt * (c.lr_mul / math.sqrt(wgt.shape[1])))


def residual_attn(c, x, w, t):
    B, C, Hh, Ww = x.shape
    h = F.group_norm(x, c.groups, c.p["norm.weight"], c.p["norm.bias"], 1e-5)
    h = conv1x1(c, h, "proj_in")
    h = h.flatten(2).permute(0, 2, 1)  # b c h w -> b (h w) c
    for i in range(c.depth):
        h = attention_block(c, h, w, t, f"block{i}")
    h = h.permute(0, 2, 1).reshape(B, -1, Hh, Ww)
    h = conv1x1(c, h, "proj_out")
    return (x + h) * c.gain


def run_case(d, case):
    params, _ = safetensors_io.load(os.path.join(d, case + ".weights.safetensors"))
    inputs, meta = safetensors_io.load(os.path.join(d, case + ".inputs.safetensors"))
    kind = meta["kind"]
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    c = Ctx(p, meta)
    x = inputs["x"].clone().requires_grad_(True)
    w = inputs["w"].clone().requires_grad_(True) if "w" in inputs else None
    t = inputs["t"].clone().requires_grad_(True) if "t" in inputs else None
    if kind == "self":
        y = self_attention(c, x, w, "")
    elif kind == "cross":
        y = cross_attention(c, x, t, "")
    elif kind == "block":
        y = attention_block(c, x, w, t, "")
    elif kind == "resattn":
        y = residual_attn(c, x, w, t)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    S = (y * inputs["gy"]).sum()
    names = list(p.keys())
    leaves = [x] + ([w] if w is not None else []) + ([t] if t is not None else []) + [p[n] for n in names]
    grads = torch.autograd.grad(S, leaves, allow_unused=True)
    grads = [torch.zeros_like(l) if g is None else g for l, g in zip(leaves, grads)]
    out = {"out/y": y.detach(), "grad/x": grads[0]}
    i = 1
    if w is not None:
        out["grad/w"] = grads[i]
        i += 1
    if t is not None:
        out["grad/t"] = grads[i]
        i += 1
    for n, g in zip(names, grads[i:]):
        out["grad/" + n] = g
    safetensors_io.save(os.path.join(d, case + ".out.safetensors"), out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: ref_attention.py DIR CASE...")
    for c in sys.argv[2:]:
        run_case(sys.argv[1], c)
