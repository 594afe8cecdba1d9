"""ref_optim.py: AdamW and the EMA update in PyTorch, for tests/test_optim.cpp.

Two parameters a [3, 4] (weight decay, lr scale 1) and b [5] (no decay, lr scale 0.1); three steps
of torch.optim.AdamW with fixed gradients; then an EMA with beta 0.9 of the final parameters
against the initial ones. Writes the initial values, the gradients and the parameters after each
step.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def main(path):
    torch.manual_seed(5)
    out = {}
    a = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    out["a0"], out["b0"] = a.clone(), b.clone()
    pa, pb = torch.nn.Parameter(a.clone()), torch.nn.Parameter(b.clone())
    lr, wd = 0.01, 0.1
    opt = torch.optim.AdamW([
        {"params": [pa], "lr": lr, "weight_decay": wd},
        {"params": [pb], "lr": lr * 0.1, "weight_decay": 0.0},
    ], betas=(0.0, 0.99), eps=1e-8)
    for step in range(3):
        ga, gb = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
        out[f"ga{step}"], out[f"gb{step}"] = ga, gb
        pa.grad, pb.grad = ga.clone(), gb.clone()
        opt.step()
        out[f"a{step + 1}"], out[f"b{step + 1}"] = pa.detach().clone(), pb.detach().clone()
    beta = 0.9
    out["ema_a"] = torch.lerp(pa.detach(), a, beta)  # beta * a0 + (1 - beta) * a3
    safetensors_io.save(path, out)


if __name__ == "__main__":
    main(sys.argv[1])
