#!/usr/bin/env python3
"""PyTorch side of bench_modconv: the same cases as bench/bench_modconv.cpp, same thread count.

The layers are the literal spec-3 formulation (tests/parity/ref_modconv.py, which follows the
released AdaptiveModulateConvLayer step by step: per-sample bank mixing, pre-normalisation,
modulation, square-sum demodulation, grouped conv / conv_transpose2d + FIR). Each case is
forward + backward of sum(y) to the input, w and every parameter.
Prints one JSON object {case: {"time_ms": median, "peak_bytes": peak}} on stdout.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "parity"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_modconv  # noqa: E402
from bench_core_torch import peak_bytes, time_ms  # noqa: E402


def make_params(case, g):
    def p(shape):
        return torch.randn(shape, generator=g).requires_grad_(True)
    cin, cout, k, n, wd = case["cin"], case["cout"], case["k"], case["n"], case["w_dim"]
    if case["kind"] == "modlinear":
        return {"weight": p([cout, cin]), "bias": p([cout]), "style.weight": p([cin, wd]), "style.bias": p([cin])}
    ps = {"weight": p([n, cout, cin, k, k]), "bias": p([cout]), "style.weight": p([cin, wd]), "style.bias": p([cin])}
    if n > 1:
        ps["filter_weight.weight"] = p([n, wd])
        ps["filter_weight.bias"] = p([n])
    return ps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--config", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cases = json.loads(a.config)
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, c in cases.items():
        ps = make_params(c, g)
        B = c["B"]
        if c["kind"] == "modlinear":
            x = torch.randn(B, c["T"], c["cin"], generator=g).requires_grad_(True)
        else:
            x = torch.randn(B, c["cin"], c["H"], c["H"], generator=g).requires_grad_(True)
        w = torch.randn(B, c["w_dim"], generator=g).requires_grad_(True)
        cfg = {"demod": c["demod"], "up": c["up"], "act": c["act"], "lr_mul": 1.0, "eps": 1e-8}
        leaves = [x, w] + list(ps.values())

        def step():
            if c["kind"] == "modlinear":
                y = ref_modconv.modlinear(x, w, ps, cfg)
            else:
                y = ref_modconv.modconv(x, w, ps, "", cfg)
            y.sum().backward()
            for t in leaves:
                t.grad = None
        out[name] = {"time_ms": time_ms(step, a.reps), "peak_bytes": peak_bytes(step)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
