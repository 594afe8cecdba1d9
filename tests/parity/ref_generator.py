"""ref_generator.py: PyTorch reference of Aurora's whole generator (docs/aurora-spec.md sections 1,
2, 3, 4, 5, 6, 7 and quirk 11.1; our implementation: aurora/generator.h).

Composed from the block references (each written from the spec, NOT with the engine's algorithms;
their header comments say how they differ), so that the end-to-end test checks the wiring:
  text head            ref_text_head.text_head  (compat_official: the literal released form at B = 1)
  mapping, Fourier     ref_modconv.mapping, ref_modconv.fourier
  ModConv / ToRGB      ref_modconv.modconv (grouped conv, conv_transpose2d + 2-D FIR upsampling)
  MTM host convs       ref_mtm.host_with_mtm (torchvision.ops.deform_conv2d)
  attention            ref_attention.self_attention / cross_attention / layer_norm / conv1x1
                       (torch.cdist logits)
  MoE                  ref_moe.moe (every expert on every token, one-hot top-1)
What is written here: the stage order of spec 2 (b4: input, conv, conv{i}; b{r}: [conv{i}, attn{i}]
interleaved), the residual attention module with an MoE or dense FFN, the skip-architecture image
sum (upfirdn2d_ref with the [1,3,3,1] filter), the MoE loss sum, and the truncation of spec 7.

Usage: ref_generator.py WEIGHTS INPUTS OUTPUT
  WEIGHTS  the generator's state dict as written by nn::save_state_dict (or by
           aurora/tools/convert_official.py): parameters and buffers by our names
  INPUTS   z [B, z_dim], tokens [B, L, text_in_dim], eot (i64 [B]),
           go/img/<r> [B, C, r, r], go/moe [], go/w [B, w_dim]   (grad_outputs)
           trunc/z_samples [n, B, z_dim] (optional: the truncation case)
           metadata: config (the generator section as JSON), buffers (JSON list of buffer names),
                     trunc_psi (with trunc/z_samples)
  OUTPUT   img/<r>, moe, w, t_g, t_seq                   forward
           grad/z, grad/tokens, grad/param/<name>       gradients of
               L = sum_r <img_r, go_r> + go_moe * moe + <w, go_w>   (zeros where unused)
           trunc/w_text_avg, trunc/w, trunc/img/<r>      the truncation case (no gradients)
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_attention  # noqa: E402
import ref_modconv  # noqa: E402
import ref_moe  # noqa: E402
import ref_mtm  # noqa: E402
import ref_text_head  # noqa: E402
import safetensors_io  # noqa: E402
from parity_lib import upfirdn2d_ref  # noqa: E402


def sub(p, prefix):
    """The entries of p under `prefix` (ending in '.'), with the prefix removed (same tensors)."""
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


class RefG:
    def __init__(self, cfg, p):
        self.cfg = cfg
        self.p = p
        self.res = []
        r = 4
        while r <= cfg["image_size"]:
            self.res.append(r)
            r *= 2

    # ---- text head and mapping (spec 1)
    def text(self, tokens, eot):
        c = self.cfg
        return ref_text_head.text_head(sub(self.p, "text_head."), tokens, eot, c["text_heads"], c["text_lr_mul"], 1.0,
                                       c["compat_official"])

    def mapping(self, z, t_g):
        c = self.cfg
        return ref_modconv.mapping(z, t_g, sub(self.p, "mapping."), {"layers": c["mapping_layers"],
                                                                       "lr_mul": c["mapping_lr_mul"]})

    # ---- synthesis (spec 2-6)
    @staticmethod
    def conv_cfg(up=False, demod=True, act="lrelu"):
        return {"lr_mul": 1.0, "demod": demod, "eps": 1e-8, "up": up, "act": act}

    def modconv(self, x, w, pre, mtm, up=False):
        if mtm:
            return ref_mtm.host_with_mtm(x, w, sub(self.p, pre))
        return ref_modconv.modconv(x, w, self.p, pre, self.conv_cfg(up=up))

    def resconv(self, x, w, pre, mtm, up):
        h = self.modconv(x, w, pre + "conv1.", False, up)  # spec 4: conv1 never has MTM
        h = self.modconv(h, w, pre + "conv2.", mtm)
        sw = self.p.get(pre + "skip_connection.weight")
        if sw is None:
            s = x
        else:
            s = F.conv2d(x, sw / math.sqrt(sw.shape[1]))
            if up:
                s = upfirdn2d_ref(s, ref_modconv.setup_filter(x.dtype), up=(2, 2), pad=(2, 1, 2, 1), gain=4.0)
        return (h + s) * self.cfg["residual_gain"]

    def residual_attn(self, x, w, t_seq, pre, stage):
        c = self.cfg
        ctx = ref_attention.Ctx(self.p, {"heads": str(c["attn_heads"]), "head_dim": str(c["attn_head_dim"]),
                                         "lr_mul": "1", "demod_eps": "1e-8"})
        B, C, H, W = x.shape
        h = F.group_norm(x, c["attn_groups"], self.p[pre + "norm.weight"], self.p[pre + "norm.bias"], 1e-5)
        h = ref_attention.conv1x1(ctx, h, pre + "proj_in")
        h = h.flatten(2).permute(0, 2, 1)  # [B, HW, width]
        loss = None
        for j in range(stage["attn_depth"]):
            b = f"{pre}block{j}"
            h = h + ref_attention.self_attention(ctx, ref_attention.layer_norm(ctx, h, b + ".norm1"), w, b + ".self_attn")
            h = h + ref_attention.cross_attention(ctx, ref_attention.layer_norm(ctx, h, b + ".norm2"), t_seq,
                                                  b + ".cross_attn")
            f = ref_attention.layer_norm(ctx, h, b + ".norm3")
            if stage["num_experts"] > 0:
                y, z_loss, aux_loss, _, _, _ = ref_moe.moe(f, w, sub(self.p, b + ".moe."), stage["num_experts"],
                                                           c["expert_hidden"], 1.0, 1e-8)
                l = 1e-3 * z_loss + 1e-3 * aux_loss
                loss = l if loss is None else loss + l
            else:
                y = ref_attention.geglu_ffn(ctx, f, b + ".ff")
            h = h + y
        h = h.permute(0, 2, 1).reshape(B, -1, H, W)
        h = ref_attention.conv1x1(ctx, h, pre + "proj_out")
        return (x + h) * c["attn_gain"], loss

    def synthesis(self, w, t_seq):
        c = self.cfg
        images = {}
        moe = torch.zeros((), dtype=w.dtype)
        x = img = None
        for r in self.res:
            st = c["stages"][str(r)]
            pre = f"synthesis.b{r}."
            if r == 4:
                x = ref_modconv.fourier(w, sub(self.p, pre + "input."), {"size": 4, "sr": c["fourier_sampling_rate"]})
                x = self.modconv(x, w, pre + "conv.", st["mtm"])
            for i in range(max(st["conv_blocks"], st["attn_modules"])):
                if i < st["conv_blocks"]:
                    x = self.resconv(x, w, f"{pre}conv{i}.", st["mtm"], r > 4 and i == 0)
                if i < st["attn_modules"]:
                    x, l = self.residual_attn(x, w, t_seq, f"{pre}attn{i}.", st)
                    if l is not None:
                        moe = moe + l
            y = ref_modconv.modconv(x, w, self.p, pre + "torgb.", self.conv_cfg(demod=False, act="linear"))
            if img is None:
                img = y
            else:
                img = y + upfirdn2d_ref(img, ref_modconv.setup_filter(img.dtype), up=(2, 2), pad=(2, 1, 2, 1), gain=4.0)
            images[r] = img
        return images, moe

    def forward(self, z, tokens, eot, psi=1.0, w_text_avg=None):
        t_g, t_seq = self.text(tokens, eot)
        w = self.mapping(z, t_g)
        if psi != 1.0:  # spec 7, in the released order: global, then text-conditional
            w = self.p["mapping.w_avg"] + psi * (w - self.p["mapping.w_avg"])
            if w_text_avg is not None:
                w = w_text_avg + psi * (w - w_text_avg)
        images, moe = self.synthesis(w, t_seq)
        return images, moe, w, t_g, t_seq


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: ref_generator.py WEIGHTS INPUTS OUTPUT")
    torch.set_num_threads(1)
    weights, _ = safetensors_io.load(sys.argv[1])
    inputs, meta = safetensors_io.load(sys.argv[2])
    cfg = json.loads(meta["config"])
    buffers = set(json.loads(meta["buffers"]))
    missing = buffers - set(weights)
    if missing:
        sys.exit(f"ref_generator.py: buffers {sorted(missing)} are not in {sys.argv[1]}")
    names = [k for k in weights if k not in buffers]
    p = {k: v.clone().requires_grad_(k not in buffers) for k, v in weights.items()}
    g = RefG(cfg, p)
    z = inputs["z"].clone().requires_grad_(True)
    tokens = inputs["tokens"].clone().requires_grad_(True)
    eot = inputs["eot"]
    images, moe, w, t_g, t_seq = g.forward(z, tokens, eot)
    loss = sum((images[r] * inputs[f"go/img/{r}"]).sum() for r in images)
    loss = loss + moe * inputs["go/moe"] + (w * inputs["go/w"]).sum()
    wrt = [z, tokens] + [p[k] for k in names]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    grads = [torch.zeros_like(t) if gr is None else gr for t, gr in zip(wrt, grads)]
    out = {f"img/{r}": v.detach() for r, v in images.items()}
    out.update({"moe": moe.detach(), "w": w.detach(), "t_g": t_g.detach(), "t_seq": t_seq.detach(),
                "grad/z": grads[0], "grad/tokens": grads[1]})
    for k, gr in zip(names, grads[2:]):
        out["grad/param/" + k] = gr

    if "trunc/z_samples" in inputs:
        with torch.no_grad():
            psi = float(meta["trunc_psi"])
            zs = inputs["trunc/z_samples"]
            t_g, _ = g.text(inputs["tokens"], eot)
            w_c = torch.stack([g.mapping(zs[i], t_g) for i in range(zs.shape[0])]).mean(dim=0)
            images, _, w, _, _ = g.forward(inputs["z"], inputs["tokens"], eot, psi, w_c)
            out["trunc/w_text_avg"] = w_c
            out["trunc/w"] = w
            for r, v in images.items():
                out[f"trunc/img/{r}"] = v

    safetensors_io.save(sys.argv[3], {k: v.detach().contiguous() for k, v in out.items()},
                        {"script": "ref_generator.py", "torch": torch.__version__})


if __name__ == "__main__":
    main()
