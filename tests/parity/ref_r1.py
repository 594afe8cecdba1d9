"""ref_r1.py: the end-to-end R1 check in PyTorch (Note [R1 double backward], autograd/engine.h).

The small StyleGAN2-like discriminator of bench/small_disc.h, with random weights that this
script draws and writes, so both sides run the very same network:
    conv2d 3->8 3x3 pad 1 -> leaky_relu(0.2) * sqrt(2) -> upfirdn2d down 2, filter [1,3,3,1]/8
    (separable; StyleGAN2 downsample2d padding 1,1,1,1) -> conv2d 8->16 3x3 pad 1 -> leaky_relu
    -> downsample -> flatten -> linear 256 -> 1
R1:  g = grad(sum(D(x)), x, create_graph=True);  r1 = mean_b(sum g^2);  backward to the weights.
Written for f32 (the training dtype) and for f64 (same weights and x, converted), under the
prefixes "f32/" and "f64/". The leaky-ReLU network is piecewise linear, so g does not depend on
the biases or on x and their R1 gradients are exactly zero; the variants "gelu.f32/" and
"gelu.f64/" replace the activation by GELU (no gain), whose second derivative is not zero, so
that the bias and input paths of the double backward are checked too. Keys per prefix:
    x, w1, b1, w2, b2, wl, bl, fir         inputs
    logits, g, r1                           forward, first gradient, penalty
    grad/<name>                             d r1 / d(weights and x); zeros for bl, which g
                                            does not depend on
"""
import math

import torch
import torch.nn.functional as F

import parity_lib
from parity_lib import upfirdn2d_ref

NAMES = ["w1", "b1", "w2", "b2", "wl", "bl"]


def discriminator(x, p, act):
    def down(h):
        return upfirdn2d_ref(h, p["fir"], down=(2, 2), pad=(1, 1, 1, 1))

    h = down(act(F.conv2d(x, p["w1"], p["b1"], 1, 1)))
    h = down(act(F.conv2d(h, p["w2"], p["b2"], 1, 1)))
    return F.linear(h.flatten(1), p["wl"], p["bl"])


def lrelu(h):
    return F.leaky_relu(h, 0.2) * math.sqrt(2.0)


def build(r):
    c0, c1, c2, res, batch = 3, 8, 16, 16, 4
    flat = c2 * (res // 4) * (res // 4)
    base = {
        "w1": torch.randn(c1, c0, 3, 3) / math.sqrt(c0 * 9),
        "b1": torch.randn(c1) * 0.1,
        "w2": torch.randn(c2, c1, 3, 3) / math.sqrt(c1 * 9),
        "b2": torch.randn(c2) * 0.1,
        "wl": torch.randn(1, flat) / math.sqrt(flat),
        "bl": torch.randn(1) * 0.1,
    }
    x0 = torch.randn(batch, c0, res, res)
    fir = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    r.cases = []
    variants = (
        (torch.float32, "f32/", lrelu),
        (torch.float64, "f64/", lrelu),
        (torch.float32, "gelu.f32/", F.gelu),
        (torch.float64, "gelu.f64/", F.gelu),
    )
    for dt, pre, act in variants:
        p = {k: v.to(dt).clone().requires_grad_(True) for k, v in base.items()}
        p["fir"] = fir.to(dt)
        x = x0.to(dt).clone().requires_grad_(True)
        logits = discriminator(x, p, act)
        (g,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        r1 = g.square().sum((1, 2, 3)).mean()
        # bl does not reach g (the bias of the last layer is a constant shift of D), so
        # its R1 gradient is None: written as zeros.
        wrt = [p[k] for k in NAMES] + [x]
        grads = torch.autograd.grad(r1, wrt, allow_unused=True)
        grads = [gr if gr is not None else torch.zeros_like(w) for gr, w in zip(grads, wrt)]
        r.put(pre + "x", x)
        r.put(pre + "fir", p["fir"])
        for k in NAMES:
            r.put(pre + k, p[k])
        r.put(pre + "logits", logits)
        r.put(pre + "g", g)
        r.put(pre + "r1", r1)
        for k, gr in zip(NAMES + ["x"], grads):
            r.put(pre + "grad/" + k, gr)
        r.cases.append(pre.rstrip("/"))


if __name__ == "__main__":
    parity_lib.main(__file__, 1006, build)
