"""ref_text_head.py: PyTorch reference of Aurora's text head (docs/aurora-spec.md section 1, quirk 11.1).

Written from the spec in the released model's style, NOT with the engine's algorithm:
  * L2 logits are -torch.cdist(q, k, p=2) * d**-0.5 on [(B*heads), L, d];
  * compat_official at batch size 1 is computed LITERALLY as the released TextTransformer does it:
    the input permuted to [L, B, D], the attention treating dim 0 as its batch (so it attends
    across the batch axis), and the logits multiplied by scale_in = False = 0 (uniform attention).
    At B = 1 this must equal the engine's per-token linear W_o (W_v LN x + b_v) + b_o, which is
    what the test checks. At B > 1 the literal form mixes the batch (a bug the engine does not
    reproduce), so there the reference uses the per-token form of spec 11.1;
  * the split into t_g and t_seq uses the released scatter-mask + boolean indexing, not a gather.

Usage: ref_text_head.py DIR CASE...   For each CASE, reads
    DIR/CASE.weights.safetensors   the TextHead's state_dict (nn::save_state_dict)
    DIR/CASE.inputs.safetensors    tokens [B, L, in_dim], eot (i64 [B]), g_g [B, width] and
                                   g_seq [B, L-1, width] (gradients of t_g and t_seq);
                                   metadata: heads, lr_mul, gain, compat (0/1)
and writes DIR/CASE.out.safetensors: out/t_g, out/t_seq, grad/tokens and grad/<every parameter>
(the gradients of S = sum(t_g * g_g) + sum(t_seq * g_seq); unused parameters get zeros). With
metadata f64_check=1 it also writes the same quantities computed in f64 (from the same values)
under f64/out/... and f64/grad/..., rounded to f32.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def equal_linear(p, x, name, lr_mul):
    wgt = p[name + ".weight"]
    return F.linear(x, wgt * (lr_mul / math.sqrt(wgt.shape[1])), p[name + ".bias"] * lr_mul)


def layer_norm(p, x, name):
    return F.layer_norm(x, (x.shape[-1],), p[name + ".weight"], p[name + ".bias"], 1e-5)


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def split_heads(t, heads):
    """b n (h d) -> (b h) n d"""
    B, N, HD = t.shape
    return t.reshape(B, N, heads, HD // heads).permute(0, 2, 1, 3).reshape(B * heads, N, HD // heads)


def merge_heads(t, heads):
    """(b h) n d -> b n (h d)"""
    BH, N, D = t.shape
    return t.reshape(BH // heads, heads, N, D).permute(0, 2, 1, 3).reshape(BH // heads, N, heads * D)


def attention(p, h, pre, heads, lr_mul, logit_mul):
    """Multi-head L2 attention over dim 1 of h [b, n, D] (the released MultiHeadAttention._forward).
    logit_mul = d**-0.5 in the proper form; 0 reproduces the released scale_in=False bug."""
    qkv = equal_linear(p, h, pre + ".to_qkv", lr_mul)
    q, k, v = (split_heads(t, heads) for t in qkv.chunk(3, dim=2))
    logits = -torch.cdist(q, k, p=2) * logit_mul
    out = merge_heads(torch.softmax(logits, dim=-1) @ v, heads)
    return equal_linear(p, out, pre + ".to_out", lr_mul)


def per_token_attention(p, h, pre, lr_mul):
    """Spec 11.1: W_o (W_v h + b_v) + b_o (the released attention at batch size 1)."""
    D = h.shape[-1]
    wgt, b = p[pre + ".to_qkv.weight"], p[pre + ".to_qkv.bias"]
    v = F.linear(h, wgt[2 * D:] * (lr_mul / math.sqrt(D)), b[2 * D:] * lr_mul)
    return equal_linear(p, v, pre + ".to_out", lr_mul)


def text_head(p, tokens, eot, heads, lr_mul, gain, compat):
    x = equal_linear(p, tokens, "align_dim", lr_mul) if "align_dim.weight" in p else tokens
    B, L, D = x.shape
    nblocks = len({k.split(".")[2] for k in p if k.startswith("transformer.res_blocks.")})
    literal = compat and B == 1
    if literal:
        x = x.permute(1, 0, 2)  # [L, B, D]: the released TextHead's permute
    for i in range(nblocks):
        pre = f"transformer.res_blocks.{i}"
        h = layer_norm(p, x, pre + ".ln_1")
        if literal:
            a = attention(p, h, pre + ".attn", heads, lr_mul, 0.0)  # dim 0 (tokens) taken as the batch
        elif compat:
            a = per_token_attention(p, h, pre + ".attn", lr_mul)
        else:
            a = attention(p, h, pre + ".attn", heads, lr_mul, (D // heads) ** -0.5)
        x = (x + a) * gain
        m = equal_linear(p, quick_gelu(equal_linear(p, layer_norm(p, x, pre + ".ln_2"), pre + ".mlp.c_fc", lr_mul)),
                         pre + ".mlp.c_proj", lr_mul)
        x = (x + m) * gain
    if literal:
        x = x.permute(1, 0, 2)
    # The released split: a mask with zeros at the EOT, boolean indexing, a gather for t_g.
    idx = eot[:, None, None].repeat(1, 1, D)
    mask = torch.scatter(torch.ones_like(x), 1, idx, torch.zeros_like(x))
    t_seq = x[mask.bool()].view(B, L - 1, D)
    t_g = torch.gather(x, 1, idx)[:, 0]
    return t_g, t_seq


def evaluate(params, inputs, meta, prefix, dtype=None):
    """Forward + gradients; keys prefix/t_g, prefix/t_seq, prefix/tokens, prefix/<param> (the
    output keys under out/, the gradients under grad/ for prefix ''). dtype: recompute in it."""
    cast = (lambda t: t.to(dtype)) if dtype is not None else (lambda t: t)
    p = {k: cast(v).clone().requires_grad_(True) for k, v in params.items()}
    tokens = cast(inputs["tokens"]).clone().requires_grad_(True)
    t_g, t_seq = text_head(p, tokens, inputs["eot"], int(meta["heads"]), float(meta["lr_mul"]), float(meta["gain"]),
                           meta["compat"] == "1")
    S = (t_g * cast(inputs["g_g"])).sum() + (t_seq * cast(inputs["g_seq"])).sum()
    names = list(p.keys())
    leaves = [tokens] + [p[n] for n in names]
    grads = torch.autograd.grad(S, leaves, allow_unused=True)
    grads = [torch.zeros_like(l) if g is None else g for l, g in zip(leaves, grads)]
    out_p, grad_p = (prefix + "out/", prefix + "grad/")
    out = {out_p + "t_g": t_g.detach(), out_p + "t_seq": t_seq.detach(), grad_p + "tokens": grads[0]}
    for n, g in zip(names, grads[1:]):
        out[grad_p + n] = g
    return out


def run_case(d, case):
    params, _ = safetensors_io.load(os.path.join(d, case + ".weights.safetensors"))
    inputs, meta = safetensors_io.load(os.path.join(d, case + ".inputs.safetensors"))
    out = evaluate(params, inputs, meta, "")
    if meta.get("f64_check") == "1":
        # The same computation in f64 from the same (f32) values: the accuracy yardstick for the
        # released-size cases, whose f32 rounding error is larger than the default tolerance.
        out.update({k: v.to(torch.float32) for k, v in evaluate(params, inputs, meta, "f64/", torch.float64).items()})
    safetensors_io.save(os.path.join(d, case + ".out.safetensors"), out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: ref_text_head.py DIR CASE...")
    torch.set_num_threads(2)
    for c in sys.argv[2:]:
        run_case(sys.argv[1], c)
