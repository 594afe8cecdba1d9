"""parity_lib.py: what every parity reference script shares (docs/testing.md explains the scheme).

A reference script records *cases*. A case is one op call on fixed random inputs, and the
recorder stores, under the key prefix "<case>/":

    in/<i>     the inputs (floating inputs that get gradients, integer index tensors, ...)
    out/<j>    the forward outputs
    go/<j>     a fixed random grad_output per floating output
    grad/<i>   first-order gradients d<sum_j out_j . go_j>/d in_i   (for differentiable inputs i)
    u/<i>      a fixed random tensor per first gradient
    gg/<i>     double backward: d S / d in_i   with S = sum_i <grad_i, u_i>
    ggo/<j>    d S / d go_j (the double backward also differentiates through grad_output)

A gradient that does not exist (input unused, or a first gradient that does not depend on the
inputs) is stored as zeros, which is also how the C++ side treats an undefined gradient.
Everything is computed by PyTorch's autograd (create_graph=True for the first pass), so the C++
test compares our forward, backward and double-backward formulas with PyTorch's.
The file's metadata lists the cases ("cases": JSON list) so the C++ test can check that it ran
every one of them.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


class Recorder:
    def __init__(self, script, seed):
        torch.manual_seed(seed)
        self.script = script
        self.seed = seed
        self.tensors = {}
        self.cases = []

    def case(self, name, fn, inputs, diff=None, double_backward=True):
        """Record fn(*inputs). `diff`: indices of the inputs to differentiate (default: every
        floating-point input); `diff=[]` records the forward only (comparisons, argmax...)."""
        if name in self.cases:
            raise ValueError(f"duplicate case {name}")
        self.cases.append(name)
        p = name + "/"
        if diff is None:
            diff = [i for i, t in enumerate(inputs) if t.is_floating_point()]
        xs = []
        for i, t in enumerate(inputs):
            self.tensors[p + f"in/{i}"] = t.detach().clone()
            x = t.detach().clone()
            if i in diff:
                x.requires_grad_(True)
            xs.append(x)
        outs = fn(*xs)
        if not isinstance(outs, (tuple, list)):
            outs = (outs,)
        for j, o in enumerate(outs):
            self.tensors[p + f"out/{j}"] = o.detach().clone()
        if not diff:
            return
        float_outs = [(j, o) for j, o in enumerate(outs) if o.is_floating_point()]
        gos = []
        for j, o in float_outs:
            go = torch.randn(o.shape, dtype=o.dtype)
            self.tensors[p + f"go/{j}"] = go.clone()
            gos.append(go.requires_grad_(True))
        dins = [xs[i] for i in diff]
        grads = torch.autograd.grad([o for _, o in float_outs], dins, gos, create_graph=True, allow_unused=True)
        s = None
        for i, x, g in zip(diff, dins, grads):
            self.tensors[p + f"grad/{i}"] = (g if g is not None else torch.zeros_like(x)).detach().clone()
            u = torch.randn(x.shape, dtype=x.dtype)
            self.tensors[p + f"u/{i}"] = u
            if double_backward and g is not None and g.requires_grad:
                term = (g * u).sum()
                s = term if s is None else s + term
        if not double_backward:
            return
        if s is not None:
            gg = torch.autograd.grad(s, dins + gos, allow_unused=True)
        else:
            gg = [None] * (len(dins) + len(gos))
        for k, i in enumerate(diff):
            g = gg[k]
            self.tensors[p + f"gg/{i}"] = (g if g is not None else torch.zeros_like(dins[k])).detach().clone()
        for k, (j, o) in enumerate(float_outs):
            g = gg[len(dins) + k]
            self.tensors[p + f"ggo/{j}"] = (g if g is not None else torch.zeros_like(o)).detach().clone()

    def put(self, key, t):
        """Store an extra named tensor (the end-to-end R1 check stores its own layout)."""
        self.tensors[key] = t.detach().clone()

    def save(self, path):
        meta = {
            "script": self.script,
            "seed": str(self.seed),
            "torch": torch.__version__,
            "cases": json.dumps(self.cases),
        }
        safetensors_io.save(path, self.tensors, meta)


def main(script, seed, build):
    """Entry point of a reference script: `build(recorder)` records the cases."""
    if len(sys.argv) != 2:
        sys.exit(f"usage: {os.path.basename(script)} OUTPUT.safetensors")
    torch.set_num_threads(1)  # deterministic reductions
    r = Recorder(os.path.basename(script), seed)
    build(r)
    r.save(sys.argv[1])


# ---- References for ops PyTorch does not have ------------------------------------------------

def upfirdn2d_ref(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), gain=1.0):
    """StyleGAN2's upfirdn2d, written from its documented semantics with plain differentiable
    PyTorch ops (so autograd gives first and second derivatives):
      1. upsample: insert up-1 zeros after every pixel (along y and x);
      2. pad by (x0, x1, y0, y1) pixels; negative values crop;
      3. convolve (true convolution: correlate with the flipped filter), the filter scaled so the
         total gain is `gain` (a 1-D filter is applied along x and then y, gain**0.5 each);
      4. keep every down-th pixel, starting at 0.
    x: [N, C, H, W]; f: [k] (separable) or [kh, kw]; up/down: (x, y); pad: (x0, x1, y0, y1)."""
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pad
    n, c, h, w = x.shape
    # 1. zero insertion: [N, C, H, 1, W, 1] padded to [N, C, H, upy, W, upx]
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)
    # 2. pad (positive parts), then crop (negative parts)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    hh, ww = x.shape[2], x.shape[3]
    x = x[:, :, max(-py0, 0):hh - max(-py1, 0), max(-px0, 0):ww - max(-px1, 0)]
    # 3. true convolution with the flipped filter, depthwise
    f = f.to(x.dtype)
    f = f * (gain ** (f.ndim / 2))
    f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        wgt = f[None, None].repeat(c, 1, 1, 1)
        x = F.conv2d(x, wgt, groups=c)
    else:
        wx = f[None, None, None, :].repeat(c, 1, 1, 1)
        wy = f[None, None, :, None].repeat(c, 1, 1, 1)
        x = F.conv2d(x, wx, groups=c)
        x = F.conv2d(x, wy, groups=c)
    # 4. downsample
    return x[:, :, ::downy, ::downx]


def conv2d_weight_ref(x, gy, kh, kw, stride, padding, dilation, groups):
    """The weight gradient of conv2d as a function of (x, gy): autograd of conv2d with respect to
    a dummy weight, kept differentiable (create_graph) in x and gy."""
    cin = x.shape[1]
    cout = gy.shape[1]
    w0 = torch.zeros(cout, cin // groups, kh, kw, dtype=x.dtype, requires_grad=True)
    y = F.conv2d(x, w0, None, stride, padding, dilation, groups)
    (gw,) = torch.autograd.grad(y, w0, gy, create_graph=True)
    return gw
