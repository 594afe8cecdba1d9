"""ref_modconv.py: PyTorch references of Aurora's conv building blocks (docs/aurora-spec.md sections
1, 2 and 3): ModulatedConv2d (adaptive kernel bank, demodulated or not, fused 2x upsampling),
ModulatedLinear (token layout), ToRGB, ResConv, MappingNetwork and the Fourier-feature input.

Written from the spec and the released model's documented semantics, deliberately NOT with the
engine's algorithm: here the per-sample weight is built literally (bank mixing by broadcasting and
a sum, pre-normalisation, modulation, square-sum demodulation, as spec 3 lists them), the
upsampling FIR is the 2-D 4x4 outer-product filter through parity_lib.upfirdn2d_ref, the grouped
conv goes through torch's conv2d / conv_transpose2d, the token-layout modulated linear is a grouped
conv1d, and the Fourier input uses torch's affine_grid and explicit 3x3 matrices as StyleGAN3.

Usage: ref_modconv.py DIR CASE...   For each CASE, reads
    DIR/CASE.weights.safetensors   the module's state_dict (parameters and buffers), as written by
                                   nn::save_state_dict
    DIR/CASE.inputs.safetensors    in/<name> inputs, gy (the grad_output); metadata "config" (JSON)
and writes DIR/CASE.out.safetensors:
    out/y              the forward output
    grad/<input name>  and grad/<parameter name>: gradients of S = sum(y * gy)
All computation is in the dtype of the inputs (f32 or f64), one thread.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402
from parity_lib import upfirdn2d_ref  # noqa: E402

SQRT2 = math.sqrt(2.0)


def act(x, a):
    return F.leaky_relu(x, 0.2) * SQRT2 if a == "lrelu" else x


def equal_linear(x, weight, bias, lr_mul, a="linear"):
    """Equalized-lr dense layer: weight * lr_mul / sqrt(fan_in), bias * lr_mul."""
    gain = lr_mul / math.sqrt(weight.shape[1])
    y = F.linear(x, weight * gain, None if bias is None else bias * lr_mul)
    return act(y, a)


def setup_filter(dtype):
    """StyleGAN2's setup_filter([1, 3, 3, 1]): the 2-D outer product normalised to sum 1."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=dtype)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def modulated_weight(w, p, pre, c):
    """The per-sample weight [B, Cout, Cin, k, k] of spec 3, step by step."""
    lr = c["lr_mul"]
    weight = p[pre + "weight"]  # [N, Cout, Cin, k, k]
    n, cout, cin, k, _ = weight.shape
    B = w.shape[0]
    style = equal_linear(w, p[pre + "style.weight"], p[pre + "style.bias"], lr)  # [B, Cin]
    if n > 1:
        logits = equal_linear(w, p[pre + "filter_weight.weight"], p[pre + "filter_weight.bias"], lr)
        alpha = torch.softmax(logits, dim=-1)  # [B, N]
        kern = (weight.unsqueeze(0) * alpha[:, :, None, None, None, None]).sum(dim=1)  # [B, Cout, Cin, k, k]
    else:
        kern = weight  # [1, Cout, Cin, k, k]
    if c["demod"]:
        kern = kern * kern.square().mean(dim=(2, 3, 4), keepdim=True).rsqrt()
        s = style * style.square().mean().rsqrt()
    else:
        s = style * (lr / math.sqrt(cin * k * k))
    wb = kern * s.reshape(B, 1, cin, 1, 1)
    if c["demod"]:
        wb = wb * (wb.square().sum(dim=(2, 3, 4), keepdim=True) + c["eps"]).rsqrt()
    return wb


def modconv(x, w, p, pre, c):
    B, cin, H, W = x.shape
    wb = modulated_weight(w, p, pre, c)
    _, cout, _, k, _ = wb.shape
    xg = x.reshape(1, B * cin, H, W)
    if not c["up"]:
        y = F.conv2d(xg, wb.reshape(B * cout, cin, k, k), padding=k // 2, groups=B)
    else:
        f = setup_filter(x.dtype)
        # StyleGAN2 conv2d_resample / upsample2d padding for up = 2, filter width 4.
        fw, up = 4, 2
        p0 = k // 2 + (fw + up - 1) // 2
        p1 = k // 2 + (fw - up) // 2
        if k == 1:
            y = F.conv2d(xg, wb.reshape(B * cout, cin, 1, 1), groups=B)
            y = upfirdn2d_ref(y, f, up=(2, 2), pad=(p0, p1, p0, p1), gain=4.0)
        else:
            px0, px1 = p0 - (k - 1), p1 - (k - up)
            pt = max(min(-px0, -px1), 0)
            wt = wb.transpose(1, 2).reshape(B * cin, cout, k, k)  # conv_transpose2d layout [in, out/g, k, k]
            y = F.conv_transpose2d(xg, wt, stride=2, padding=pt, groups=B)
            y = upfirdn2d_ref(y, f, pad=(px0 + pt, px1 + pt, px0 + pt, px1 + pt), gain=4.0)
    y = y.reshape(B, cout, y.shape[2], y.shape[3])
    if (pre + "bias") in p:
        y = y + (p[pre + "bias"] * c["lr_mul"]).reshape(1, -1, 1, 1)
    return act(y, c["act"])


def modlinear(x, w, p, c):
    """Token layout [B, T, Cin] as the released router: a grouped 1x1 conv over the batch."""
    B, T, cin = x.shape
    lr = c["lr_mul"]
    k = p["weight"]  # [Cout, Cin]
    cout = k.shape[0]
    style = equal_linear(w, p["style.weight"], p["style.bias"], lr)
    if c["demod"]:
        k = k * k.square().mean(dim=1, keepdim=True).rsqrt()
        s = style * style.square().mean().rsqrt()
    else:
        s = style * (lr / math.sqrt(cin))
    wb = k.unsqueeze(0) * s.unsqueeze(1)  # [B, Cout, Cin]
    if c["demod"]:
        wb = wb * (wb.square().sum(dim=2, keepdim=True) + c["eps"]).rsqrt()
    xin = x.permute(0, 2, 1).reshape(1, B * cin, T)
    y = F.conv1d(xin, wb.reshape(B * cout, cin, 1), groups=B).reshape(B, cout, T).permute(0, 2, 1)
    if "bias" in p:
        y = y + p["bias"] * lr
    return act(y, c["act"])


def resconv(x, w, p, c):
    cc = dict(c, k=3, demod=True, act="lrelu")
    h = modconv(x, w, p, "conv1.", dict(cc, up=c["up"]))
    h = modconv(h, w, p, "conv2.", dict(cc, up=False))
    if "skip_connection.weight" in p:
        sw = p["skip_connection.weight"]
        s = F.conv2d(x, sw * (c["lr_mul"] / math.sqrt(sw.shape[1])))
        if c["up"]:
            s = upfirdn2d_ref(s, setup_filter(x.dtype), up=(2, 2), pad=(2, 1, 2, 1), gain=4.0)
    else:
        s = x
    return (h + s) * c["gain"]


def pixel_norm(x, eps=1e-8):
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def mapping(z, t, p, c):
    h = pixel_norm(z)
    if t is not None:
        h = torch.cat([h, pixel_norm(t)], dim=1)
    for i in range(c["layers"]):
        h = equal_linear(h, p[f"dense{i}.weight"], p[f"dense{i}.bias"], c["lr_mul"], "lrelu")
    return h


def fourier(w, p, c):
    """StyleGAN3's SynthesisInput, as the released FourierInputLayer (no amplitude damping)."""
    B = w.shape[0]
    dt = w.dtype
    size, sr = c["size"], c["sr"]
    C = p["weight"].shape[0]
    transforms = p["transform"].unsqueeze(0)
    freqs = p["freqs"].unsqueeze(0)
    phases = p["phases"].unsqueeze(0)
    t = equal_linear(w, p["affine.weight"], p["affine.bias"], 1.0)
    t = t / t[:, :2].norm(dim=1, keepdim=True)
    # Built with stack (not in-place writes) so autograd sees every entry.
    one, zero = torch.ones(B, dtype=dt), torch.zeros(B, dtype=dt)
    m_r = torch.stack([torch.stack([t[:, 0], -t[:, 1], zero], 1),
                       torch.stack([t[:, 1], t[:, 0], zero], 1),
                       torch.stack([zero, zero, one], 1)], 1)
    m_t = torch.stack([torch.stack([one, zero, -t[:, 2]], 1),
                       torch.stack([zero, one, -t[:, 3]], 1),
                       torch.stack([zero, zero, one], 1)], 1)
    transforms = m_r @ m_t @ transforms
    phases = phases + (freqs @ transforms[:, :2, 2:]).squeeze(2)
    freqs = freqs @ transforms[:, :2, :2]
    theta = torch.eye(2, 3, dtype=dt)
    theta[0, 0] = 0.5 * size / sr
    theta[1, 1] = 0.5 * size / sr
    grids = F.affine_grid(theta.unsqueeze(0), [1, 1, size, size], align_corners=False)
    x = (grids.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [B, H, W, C]
    x = x + phases.unsqueeze(1).unsqueeze(2)
    x = torch.sin(x * (math.pi * 2))
    x = x @ (p["weight"] / math.sqrt(C)).t()
    return x.permute(0, 3, 1, 2).contiguous()


def run_case(d, case):
    params, _ = safetensors_io.load(os.path.join(d, case + ".weights.safetensors"))
    inputs, meta = safetensors_io.load(os.path.join(d, case + ".inputs.safetensors"))
    c = json.loads(meta["config"])
    kind = c["kind"]
    names = c["inputs"]
    xs = {n: inputs["in/" + n].clone().requires_grad_(True) for n in names}
    buffers = set(c.get("buffers", []))
    p = {}
    for k, v in params.items():
        p[k] = v.clone().requires_grad_(k not in buffers)
    if kind == "modconv":
        y = modconv(xs["x"], xs["w"], p, "", c)
    elif kind == "modlinear":
        y = modlinear(xs["x"], xs["w"], p, c)
    elif kind == "resconv":
        y = resconv(xs["x"], xs["w"], p, c)
    elif kind == "mapping":
        y = mapping(xs["z"], xs.get("t"), p, c)
    elif kind == "fourier":
        y = fourier(xs["w"], p, c)
    else:
        raise ValueError(f"unknown kind {kind}")
    gy = inputs["gy"]
    if tuple(gy.shape) != tuple(y.shape):
        raise ValueError(f"{case}: grad_output {tuple(gy.shape)} vs output {tuple(y.shape)}")
    wrt_names = list(names) + [k for k in p if k not in buffers]
    wrt = [xs[n] for n in names] + [p[k] for k in p if k not in buffers]
    grads = torch.autograd.grad(y, wrt, gy, allow_unused=True)
    out = {"out/y": y.detach()}
    for n, t, g in zip(wrt_names, wrt, grads):
        out["grad/" + n] = (g if g is not None else torch.zeros_like(t)).detach()
    safetensors_io.save(os.path.join(d, case + ".out.safetensors"), out, {"case": case})


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: ref_modconv.py DIR CASE...")
    torch.set_num_threads(1)
    for case in sys.argv[2:]:
        run_case(sys.argv[1], case)


if __name__ == "__main__":
    main()
