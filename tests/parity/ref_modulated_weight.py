"""ref_modulated_weight.py: PyTorch reference for the fused modulated_weight op
(tensor/ops_fused.cpp, tests/test_modulated_weight.cpp).

The per-sample weight is built literally as docs/aurora-spec.md section 3 lists the steps, always
in float64 (f32 cases cast their inputs up and the result down, so the reference carries no f32
rounding of its own):
  demodulate:  K <- K / rms over (Cin, *taps) per output channel (per sample when batched)
               s <- s / rms(s) over the whole [B, Cin] tensor
               W  = K * s[b, None, :, None...]
               W <- W / sqrt(sum over (Cin, *taps) of W^2 + eps)
  otherwise:   W  = K * s * weight_gain
  transposed:  W.transpose(1, 2)  ([B, Cin, Cout, *taps])
PyTorch's autograd (create_graph, layout of parity_lib.py) gives the first gradients with respect
to K and s and the double backward.

Case names: <kernel>.<demod|plain>.<std|tr>.<f32|f64>, kernel one of
  shared.k3   K [5, 4, 3, 3], B = 3          batched.k3  K [3, 5, 4, 3, 3]
  shared.lin  K [6, 4] (taps 1, a linear)    batched.k1  K [3, 6, 4, 1, 1]
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parity_lib  # noqa: E402

F32 = torch.float32
F64 = torch.float64

GAIN = 0.37
EPS = 1e-8

KERNELS = {
    "shared.k3": (False, (5, 4, 3, 3)),
    "batched.k3": (True, (3, 5, 4, 3, 3)),
    "shared.lin": (False, (6, 4)),
    "batched.k1": (True, (3, 6, 4, 1, 1)),
}
B, CIN = 3, 4


def modulated_weight_ref(batched, demodulate, transposed):
    def f(kernel, styles):
        dtype = kernel.dtype
        k = kernel.to(F64)
        s = styles.to(F64)
        kb = k if batched else k.unsqueeze(0)          # [Bk, Cout, Cin, *taps]
        inner = tuple(range(2, kb.dim()))               # (Cin, *taps)
        if demodulate:
            kb = kb / kb.square().mean(dim=inner, keepdim=True).sqrt()
            s = s / s.square().mean().sqrt()
        sv = s.view(s.shape[0], 1, s.shape[1], *([1] * (kb.dim() - 3)))
        w = kb * sv                                     # [B, Cout, Cin, *taps]
        if demodulate:
            w = w * (w.square().sum(dim=inner, keepdim=True) + EPS).rsqrt()
        else:
            w = w * GAIN
        if transposed:
            w = w.transpose(1, 2)
        return w.to(dtype)
    return f


def build(r):
    for dt, sfx in [(F32, "f32"), (F64, "f64")]:
        for kname, (batched, shape) in KERNELS.items():
            for demod in (True, False):
                for tr in (False, True):
                    name = f"{kname}.{'demod' if demod else 'plain'}.{'tr' if tr else 'std'}.{sfx}"
                    kernel = torch.randn(shape, dtype=dt)
                    styles = torch.randn(B, CIN, dtype=dt) + 1.0  # style bias init 1 (spec 3.2)
                    r.case(name, modulated_weight_ref(batched, demod, tr), [kernel, styles])


if __name__ == "__main__":
    parity_lib.main(__file__, 11, build)
