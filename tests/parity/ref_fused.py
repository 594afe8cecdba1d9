"""ref_fused.py: PyTorch references for the fused ops (tensor/ops_fused.cpp), tests/test_fused.cpp.

bias_act is recorded as the unfused expression it replaces,
    clamp(act(x + b.view(broadcast along dim)) * gain, -clamp, clamp),
so PyTorch's autograd (create_graph=True, layout of parity_lib.py) gives the reference forward,
first gradients and double-backward gradients. Inputs keep x + b away from 0 (the lrelu / relu
kink) and the activated value away from the clamp bounds, where the derivative is not defined.

AdamW: torch.optim.AdamW on three f64 parameters (two groups: lr scale 1 with decay, 0.1 without),
betas (0.5, 0.99) so the first moment matters too; the C++ test lays the same parameters out in
one flat buffer and compares after each of three steps.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parity_lib  # noqa: E402

F32 = torch.float32
F64 = torch.float64
SQRT2 = math.sqrt(2.0)


def away0(shape, dtype, lo=0.05, hi=2.0):
    mag = torch.rand(shape, dtype=dtype) * (hi - lo) + lo
    sign = torch.where(torch.rand(shape) < 0.5, -1.0, 1.0).to(dtype)
    return mag * sign


def bcast(b, ndim, dim):
    shape = [1] * ndim
    shape[dim] = b.numel()
    return b.view(shape)


def act_fn(kind, alpha):
    if kind == "lrelu":
        return lambda v: F.leaky_relu(v, alpha)
    if kind == "relu":
        return F.relu
    return lambda v: v


def bias_act_ref(kind, dim, alpha=0.2, gain=1.0, clamp=None):
    act = act_fn(kind, alpha)

    def f(x, b=None):
        v = x if b is None else x + bcast(b, x.dim(), dim)
        y = act(v) * gain
        return y if clamp is None else y.clamp(-clamp, clamp)
    return f


def inputs(shape, dim, dtype, with_bias=True, v=None):
    """x with x + b = v (|v| in [0.05, 2] unless given), and b."""
    v = away0(shape, dtype) if v is None else v
    if not with_bias:
        return [v]
    b = torch.randn(shape[dim], dtype=dtype)
    return [v - bcast(b, len(shape), dim), b]


def clamp_safe(shape, dtype):
    """|v| in [0.05, 0.5] or [1, 2]: with lrelu(0.2) * sqrt 2 and clamp 1, |y| stays away from 1."""
    small = away0(shape, dtype, 0.05, 0.5)
    large = away0(shape, dtype, 1.0, 2.0)
    return torch.where(torch.rand(shape) < 0.5, small, large)


def build(r):
    for dt, sfx in [(F32, "f32"), (F64, "f64")]:
        r.case(f"lrelu.nchw.{sfx}", bias_act_ref("lrelu", 1, 0.2, SQRT2), inputs((2, 3, 4, 5), 1, dt))
        r.case(f"linear.last.{sfx}", bias_act_ref("linear", 1), inputs((4, 6), 1, dt))
        r.case(f"lrelu.clamp.{sfx}", bias_act_ref("lrelu", 1, 0.2, SQRT2, 1.0),
               inputs((2, 4, 3, 3), 1, dt, v=clamp_safe((2, 4, 3, 3), dt)))
    r.case("lrelu.last.f32", bias_act_ref("lrelu", 2, 0.2, SQRT2), inputs((2, 5, 7), 2, F32))
    r.case("relu.gain.f32", bias_act_ref("relu", 1, 0.0, 2.0), inputs((2, 5, 7), 1, F32))
    r.case("lrelu.alpha.dim0.f32", bias_act_ref("lrelu", 0, 0.1, 1.5), inputs((6, 4), 0, F32))
    r.case("linear.gain.1d.f64", bias_act_ref("linear", 0, 0.2, 0.5), inputs((7,), 0, F64))
    r.case("linear.clamp.f32", bias_act_ref("linear", 1, 0.2, 1.0, 1.0),
           inputs((3, 4, 5), 1, F32, v=clamp_safe((3, 4, 5), F32)))
    r.case("lrelu.nobias.f32", bias_act_ref("lrelu", 1, 0.2, SQRT2), inputs((3, 4, 5), 1, F32, with_bias=False))
    adamw(r)


def adamw(r):
    """Stored with r.put under adamw/ (not a parity case)."""
    out = {}
    a = torch.randn(3, 4, dtype=F64)
    b = torch.randn(5, dtype=F64)
    c = torch.randn(2, 3, dtype=F64)
    out["adamw/a0"], out["adamw/b0"], out["adamw/c0"] = a.clone(), b.clone(), c.clone()
    pa, pb, pc = (torch.nn.Parameter(t.clone()) for t in (a, b, c))
    lr, wd = 0.01, 0.1
    opt = torch.optim.AdamW([
        {"params": [pa, pc], "lr": lr, "weight_decay": wd},
        {"params": [pb], "lr": lr * 0.1, "weight_decay": 0.0},
    ], betas=(0.5, 0.99), eps=1e-8)
    for step in range(3):
        for name, p in (("a", pa), ("b", pb), ("c", pc)):
            g = torch.randn(p.shape, dtype=F64)
            out[f"adamw/g{name}{step}"] = g
            p.grad = g.clone()
        opt.step()
        for name, p in (("a", pa), ("b", pb), ("c", pc)):
            out[f"adamw/{name}{step + 1}"] = p.detach().clone()
    for k, t in out.items():
        r.put(k, t)


if __name__ == "__main__":
    parity_lib.main(__file__, 7, build)
