"""ref_mtm.py: PyTorch reference for MTM (docs/aurora-spec.md section 4) on its host, a 3x3
adaptive modulated conv (spec section 3), written literally from the spec, with
torchvision.ops.deform_conv2d and the batch folded into channels as the released code does.

usage: ref_mtm.py DIR CASE...   reads DIR/CASE.weights.safetensors (our state_dict) and
DIR/CASE.inputs.safetensors (in/x, in/w, gy; metadata "config"), writes DIR/CASE.out.safetensors:
out/y and grad/<name> = d<y, gy>/d<name> for x, w and every parameter.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def equal_linear(x, weight, bias):
    # equalized lr with lr_mul 1: weight / sqrt(fan_in), bias as stored
    return x @ (weight / math.sqrt(weight.shape[1])).t() + bias


def modulated_demodulated(kernel, styles):
    """kernel [Cout, Cin, k, k] or [B, Cout, Cin, k, k]; styles [B, Cin] -> W [B, Cout, Cin, k, k]
    (spec 3.3: pre-normalise rows and styles, modulate, demodulate)."""
    if kernel.dim() == 4:
        kernel = kernel.unsqueeze(0)
    kernel = kernel / kernel.square().mean(dim=[2, 3, 4], keepdim=True).sqrt()
    styles = styles / styles.square().mean().sqrt()
    w = kernel * styles[:, None, :, None, None]
    return w / (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).sqrt()


def grouped_conv(x, wb, padding):
    b, cin, h, wd = x.shape
    cout = wb.shape[1]
    y = F.conv2d(x.reshape(1, b * cin, h, wd), wb.reshape(b * cout, cin, *wb.shape[3:]), padding=padding, groups=b)
    return y.reshape(b, cout, h, wd)


def host_with_mtm(x, w, p):
    b, cin, h, wd = x.shape
    bank = p["weight"]  # [N, Cout, Cin, 3, 3]
    if bank.shape[0] > 1:
        alpha = torch.softmax(equal_linear(w, p["filter_weight.weight"], p["filter_weight.bias"]), dim=1)
        kernel = torch.einsum("bn,noikl->boikl", alpha, bank)
    else:
        kernel = bank[0]
    wb = modulated_demodulated(kernel, equal_linear(w, p["style.weight"], p["style.bias"]))
    cout = wb.shape[1]
    # MTM (spec 4): offset predictor on the same x, own style, 27 channels, no bias.
    ow = modulated_demodulated(p["mtm.offset_conv.weight"][0],
                               equal_linear(w, p["mtm.offset_conv.style.weight"], p["mtm.offset_conv.style.bias"]))
    o = grouped_conv(x, ow, 1) * p["mtm.out_scale"] + p["mtm.out_bias"]
    a, bb, m = torch.split(o, 9, dim=1)
    offset = torch.cat([a, bb], dim=1)
    mask = 2.0 * torch.sigmoid(m)
    y = deform_conv2d(x.reshape(1, b * cin, h, wd), offset.reshape(1, b * 18, h, wd),
                      wb.reshape(b * cout, cin, 3, 3), mask=mask.reshape(1, b * 9, h, wd), padding=1)
    y = y.reshape(b, cout, h, wd) + p["bias"].view(1, -1, 1, 1)
    return F.leaky_relu(y, 0.2) * math.sqrt(2.0)


def run_case(d, case):
    params, _ = safetensors_io.load(os.path.join(d, case + ".weights.safetensors"))
    inputs, meta = safetensors_io.load(os.path.join(d, case + ".inputs.safetensors"))
    json.loads(meta["config"])
    x = inputs["in/x"].clone().requires_grad_(True)
    w = inputs["in/w"].clone().requires_grad_(True)
    p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    y = host_with_mtm(x, w, p)
    gy = inputs["gy"]
    names = ["x", "w"] + list(p)
    wrt = [x, w] + list(p.values())
    grads = torch.autograd.grad(y, wrt, gy, allow_unused=True)
    out = {"out/y": y.detach()}
    for n, t, g in zip(names, wrt, grads):
        out["grad/" + n] = (g if g is not None else torch.zeros_like(t)).detach()
    safetensors_io.save(os.path.join(d, case + ".out.safetensors"), out, {"case": case})


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: ref_mtm.py DIR CASE...")
    torch.set_num_threads(1)
    for case in sys.argv[2:]:
        run_case(sys.argv[1], case)


if __name__ == "__main__":
    main()
