"""ref_official.py: the released Aurora generator's inference, run on a RELEASED-format checkpoint by
its released names (zhujiapeng/Aurora models/text_generator.py and run_synthesize.py, as described
in docs/aurora-spec.md sections 1-7 and 11 and docs/official-checkpoint.md). Written from the
released module structure, independently of aurora/tools/convert_official.py's name table: it
walks `synthesis.net.<i>` in order, tells the module kinds apart by their parameters, and uses every
parameter by its released name, with the released computation where it differs from ours:
  * the text head exactly as released at batch size 1: input permuted to [L, B, D], attention over
    dim 0 with the logits multiplied by scale_in = False (0);
  * 1x1 modulated layers (self-attention output, MoE router) as AdaptiveModulateConvLayer on
    [B, C, H, W] with their 5-D weights (ref_modconv.modconv);
  * MTM as the released get_offsets: offsets = conv(x) * mtm_scales + mtm_bias, chunks
    (x, y, mask), deform_conv2d over the batch folded into channels;
  * the MoE as released: router -> softmax -> argmax one-hot, each expert on its tokens, output
    times the top-1 probability; z-loss and load-balancing loss per image;
  * truncation as run_synthesize.py: wp <- w_avg.lerp(wp, psi), then avg_wp.lerp(wp, psi).
Shared low-level math (no names involved): ref_modconv.modconv / fourier / mapping (whose local
parameter names are the released ones), ref_mtm.modulated_demodulated, parity_lib.upfirdn2d_ref.

Usage: ref_official.py CHECKPOINT.pth INPUTS OUTPUT
  CHECKPOINT  {'generator_smooth': state_dict, ...}
  INPUTS      z [1, z_dim], tokens [1, L, clip_dim], eot (i64 [1]), go/img/<r> (grad_outputs),
              trunc/z_samples [n, 1, z_dim]; metadata num_heads, trunc_psi
  OUTPUT      img/<r>, moe, w; grad/z, grad/tokens (of L = sum_r <img_r, go_r>);
              trunc/img/<r>, trunc/w
"""
import math
import os
import re
import sys

import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_modconv  # noqa: E402
import ref_mtm  # noqa: E402
import safetensors_io  # noqa: E402
from parity_lib import upfirdn2d_ref  # noqa: E402

LRELU = dict(lr_mul=1.0, demod=True, eps=1e-8, up=False, act="lrelu")


def dense(p, x, name, lr_mul=1.0, bias=True):
    """Released DenseLayer: weight * lr_mul / sqrt(in), bias * lr_mul."""
    w = p[name + ".weight"]
    return F.linear(x, w * (lr_mul / math.sqrt(w.shape[1])), p[name + ".bias"] * lr_mul if bias else None)


def layer_norm(p, x, name):
    return F.layer_norm(x, (x.shape[-1],), p[name + ".weight"], p[name + ".bias"], 1e-5)


class Official:
    def __init__(self, p, num_heads):
        self.p = p
        self.heads = num_heads

    # ---- TextHead (released, batch size 1)
    def text_head(self, feats, eot):
        p = self.p
        if "text_head.align_dim.weight" in p:
            feats = dense(p, feats, "text_head.align_dim", 0.01)
        B, L, D = feats.shape
        x = feats.permute(1, 0, 2)  # [L, B, D]: the released permute
        n = len({m.group(1) for k in p for m in [re.match(r"text_head\.transformer\.res_blocks\.(\d+)\.", k)] if m})
        for i in range(n):
            pre = f"text_head.transformer.res_blocks.{i}"
            h = layer_norm(p, x, pre + ".ln_1")
            qkv = dense(p, h, pre + ".attn.to_qkv", 0.01)
            q, k, v = qkv.chunk(3, dim=2)
            # 'b n (h d) -> (b h) n d' with b = L (dim 0 taken as the batch), n = B
            split = lambda t: t.reshape(L, B, self.heads, D // self.heads).permute(0, 2, 1, 3).reshape(L * self.heads, B, -1)  # noqa: E731
            q, k, v = split(q), split(k), split(v)
            logits = -torch.cdist(q, k, p=2) * False  # scale_in = False multiplies the logits by False
            a = torch.einsum("bij,bjd->bid", torch.softmax(logits, dim=-1), v)
            a = a.reshape(L, self.heads, B, -1).permute(0, 2, 1, 3).reshape(L, B, D)
            x = x + dense(p, a, pre + ".attn.to_out.0", 0.01)  # text_head_gain 1
            m = dense(p, layer_norm(p, x, pre + ".ln_2"), pre + ".mlp.c_fc", 0.01)
            x = x + dense(p, m * torch.sigmoid(1.702 * m), pre + ".mlp.c_proj", 0.01)
        x = x.permute(1, 0, 2)
        idx = eot[:, None, None].repeat(1, 1, D)
        mask = torch.scatter(torch.ones_like(x), 1, idx, torch.zeros_like(x))
        return torch.gather(x, 1, idx)[:, 0], x[mask.bool()].view(B, L - 1, D)

    # ---- AdaptiveModulateConvLayer with MTM (released get_offsets + deform_conv2d)
    def mtm_conv(self, x, w, pre):
        p = self.p
        B, cin, H, W = x.shape
        ow = ref_mtm.modulated_demodulated(p[pre + "mtm_weight"], dense(p, w, pre + "mtm_style"))
        off = ref_mtm.grouped_conv(x, ow, 1) * p[pre + "mtm_scales"] + p[pre + "mtm_bias"]
        off_x, off_y, m = torch.chunk(off, 3, dim=1)
        offsets = torch.cat([off_x, off_y], 1)
        mask = m.sigmoid() * 2
        bank = p[pre + "weight"]
        if bank.shape[0] > 1:
            alpha = torch.softmax(dense(p, w, pre + "filter_weight"), dim=-1)
            kernel = (bank.unsqueeze(0) * alpha[:, :, None, None, None, None]).sum(1)
        else:
            kernel = bank
        wb = ref_mtm.modulated_demodulated(kernel[0] if kernel.dim() == 5 and bank.shape[0] == 1 else kernel,
                                           dense(p, w, pre + "style"))
        cout = wb.shape[1]
        y = deform_conv2d(x.reshape(1, B * cin, H, W), offsets.reshape(1, -1, H, W), wb.reshape(B * cout, cin, 3, 3),
                          mask=mask.reshape(1, -1, H, W), padding=1).reshape(B, cout, H, W)
        return F.leaky_relu(y + p[pre + "bias"].view(1, -1, 1, 1), 0.2) * math.sqrt(2.0)

    def conv(self, x, w, pre, up=False):
        if (pre + "mtm_weight") in self.p:
            return self.mtm_conv(x, w, pre)
        return ref_modconv.modconv(x, w, self.p, pre, dict(LRELU, up=up))

    def resconv(self, x, w, pre):
        p = self.p
        up = (pre + "conv1.filter") in p
        h = self.conv(self.conv(x, w, pre + "conv1.", up), w, pre + "conv2.")
        if (pre + "skip_connection.weight") in p:
            sw = p[pre + "skip_connection.weight"]
            s = F.conv2d(x, sw / math.sqrt(sw.shape[1]))
            if up:
                s = upfirdn2d_ref(s, p[pre + "skip_connection.filter"], up=(2, 2), pad=(2, 1, 2, 1), gain=4.0)
        else:
            s = x
        return (h + s) * 0.4  # residual_gain

    # ---- ResidualAttnBlock
    def l2_attend(self, q, k, v):
        B, T, I = q.shape
        d = I // self.heads
        sp = lambda t: t.reshape(B, -1, self.heads, t.shape[-1] // self.heads).permute(0, 2, 1, 3).reshape(B * self.heads, -1, t.shape[-1] // self.heads)  # noqa: E731
        return sp(q), sp(k), sp(v), d

    def merge(self, a, B):
        _, n, d = a.shape
        return a.reshape(B, self.heads, n, d).permute(0, 2, 1, 3).reshape(B, n, self.heads * d)

    def ff(self, x, w, pre, H, W):
        p = self.p
        if (pre + "routing.weight") not in p:
            u, g = dense(p, x, pre + "net.0.proj").chunk(2, dim=-1)
            return dense(p, u * F.gelu(g), pre + "net.2"), None
        B, T, C = x.shape
        r = ref_modconv.modconv(x.permute(0, 2, 1).reshape(B, C, H, W), w, p, pre + "routing.", LRELU)
        logits = r.reshape(B, -1, T).permute(0, 2, 1)  # b c h w -> b (h w) c
        probs = torch.softmax(logits, dim=-1)
        E = logits.shape[-1]
        onehot = F.one_hot(torch.argmax(probs, dim=-1), E)
        out = x.clone()
        for e in range(E):
            sel = onehot[:, :, e].bool()
            u, g = dense(p, x[sel], f"{pre}net.{e}.0.proj").chunk(2, dim=-1)
            out[sel] = dense(p, u * F.gelu(g), f"{pre}net.{e}.2")
        y = probs.max(dim=-1).values.unsqueeze(-1) * out
        z_loss = torch.logsumexp(logits, dim=-1).square().sum() / (B * T)
        aux = (onehot.float().mean(dim=1) * probs.mean(dim=1)).mean() * E * E
        return y, 0.001 * z_loss + 0.001 * aux

    def attn_block(self, x, w, ctx, pre):
        p = self.p
        B, C, H, W = x.shape
        h = F.group_norm(x, 32, p[pre + "norm.weight"], p[pre + "norm.bias"], 1e-5)
        pw = p[pre + "proj_in.weight"]
        h = F.conv2d(h, pw / math.sqrt(pw.shape[1]))
        loss = 0.0
        j = 0
        while (f"{pre}attn_blocks.{j}.norm1.weight") in p:
            b = f"{pre}attn_blocks.{j}."
            I = h.shape[1]
            t = h.flatten(2).permute(0, 2, 1)
            u = layer_norm(p, t, b + "norm1")
            qk = dense(p, u, b + "self_attn.to_qk", bias=False)
            v = dense(p, u, b + "self_attn.to_v", bias=False)
            # released: heads split from [B, T, 2I] first, then q, k = the two halves of each head
            qk = qk.reshape(B, -1, self.heads, 2 * I // self.heads).permute(0, 2, 1, 3).reshape(B * self.heads, -1, 2 * I // self.heads)
            q, k = qk.chunk(2, dim=2)
            _, _, vv, d = self.l2_attend(v, v, v)
            a = torch.softmax(-torch.cdist(q, k, p=2) * d ** -0.5, dim=-1) @ vv
            a = self.merge(a, B).permute(0, 2, 1).reshape(B, I, H, W)
            o = ref_modconv.modconv(a, w, p, b + "self_attn.proj_out.", dict(LRELU, act="linear"))
            t = o.flatten(2).permute(0, 2, 1) + t
            u = layer_norm(p, t, b + "norm2")
            q = dense(p, u, b + "cross_attn.to_q", bias=False)
            k, vc = dense(p, ctx, b + "cross_attn.to_kv", bias=False).chunk(2, dim=2)
            q, k, vc, d = self.l2_attend(q, k, vc)
            a = self.merge(torch.softmax(-torch.cdist(q, k, p=2) * d ** -0.5, dim=-1) @ vc, B)
            t = dense(p, a, b + "cross_attn.proj_out.0") + t
            y, l = self.ff(layer_norm(p, t, b + "norm3"), w, b + "ff.", H, W)
            if l is not None:
                loss = loss + l
            h = (t + y).permute(0, 2, 1).reshape(B, I, H, W)
            j += 1
        pw = p[pre + "proj_out.weight"]
        return (x + F.conv2d(h, pw / math.sqrt(pw.shape[1]))) * 0.3, loss  # attn_gain

    # ---- the generator
    def mapping(self, z, t_g):
        n = len({k for k in self.p if re.fullmatch(r"mapping\.dense\d+\.weight", k)})
        return ref_modconv.mapping(z, t_g, {k[8:]: v for k, v in self.p.items() if k.startswith("mapping.")},
                                   {"layers": n, "lr_mul": 0.01})

    def synthesis(self, w, ctx):
        p = self.p
        nets = sorted({int(m.group(1)) for k in p for m in [re.match(r"synthesis\.net\.(\d+)\.", k)] if m})
        x, img, res, images, moe = None, None, 2, {}, 0.0
        for i in nets:
            pre = f"synthesis.net.{i}.0."
            if (pre + "affine.weight") in p:
                res = 4
                x = ref_modconv.fourier(w, {k[len(pre):]: v for k, v in p.items() if k.startswith(pre)},
                                        {"size": 4, "sr": 4})
                x = self.conv(x, w, f"synthesis.net.{i}.1.")
            elif (pre + "conv1.weight") in p:
                if (pre + "conv1.filter") in p:
                    res *= 2
                x = self.resconv(x, w, pre)
            else:
                x, l = self.attn_block(x, w, ctx, pre)
                moe = moe + l
            last = i == nets[-1] or (f"synthesis.net.{i + 1}.0.conv1.filter" in p)
            if last:  # layer_id_to_res: the last module of a resolution
                y = ref_modconv.modconv(x, w, p, f"synthesis.output_res_{res}x{res}.",
                                        dict(LRELU, demod=False, act="linear"))
                img = y if img is None else y + upfirdn2d_ref(img, p["synthesis.filter"], up=(2, 2), pad=(2, 1, 2, 1),
                                                              gain=4.0)
                images[res] = img
        return images, moe

    def forward(self, z, tokens, eot, psi=1.0, avg_w=None):
        t_g, t_seq = self.text_head(tokens, eot)
        w = self.mapping(z, t_g)
        if psi != 1.0:
            w = self.p["w_avg"].lerp(w, psi)
            if avg_w is not None:
                w = avg_w.lerp(w, psi)
        images, moe = self.synthesis(w, t_seq)
        return images, moe, w


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: ref_official.py CHECKPOINT.pth INPUTS OUTPUT")
    torch.set_num_threads(1)
    p = torch.load(sys.argv[1], map_location="cpu")["generator_smooth"]
    inputs, meta = safetensors_io.load(sys.argv[2])
    g = Official(p, int(meta["num_heads"]))
    z = inputs["z"].clone().requires_grad_(True)
    tokens = inputs["tokens"].clone().requires_grad_(True)
    eot = inputs["eot"]
    images, moe, w = g.forward(z, tokens, eot)
    loss = sum((images[r] * inputs[f"go/img/{r}"]).sum() for r in images)
    gz, gt = torch.autograd.grad(loss, [z, tokens])
    out = {f"img/{r}": v.detach() for r, v in images.items()}
    out.update({"moe": torch.as_tensor(moe).detach().reshape(()), "w": w.detach(), "grad/z": gz, "grad/tokens": gt})
    with torch.no_grad():
        psi = float(meta["trunc_psi"])
        zs = inputs["trunc/z_samples"]
        t_g, _ = g.text_head(inputs["tokens"], eot)
        avg_w = sum(g.mapping(zs[i], t_g) for i in range(zs.shape[0])) / zs.shape[0]  # loop_mapping
        images, _, w = g.forward(inputs["z"], inputs["tokens"], eot, psi, avg_w)
        out["trunc/w"] = w
        out.update({f"trunc/img/{r}": v for r, v in images.items()})
    safetensors_io.save(sys.argv[3], {k: v.detach().contiguous() for k, v in out.items()}, {"script": "ref_official.py"})


if __name__ == "__main__":
    main()
