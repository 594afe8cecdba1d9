#!/usr/bin/env python3
"""PyTorch side of bench_core: the same cases as bench/bench_core.cpp, same thread count.

Prints one JSON object {case: {"time_ms": median, "peak_bytes": peak}} on stdout.
peak_bytes is the high-water mark of bytes held by tensors allocated during one repetition of the
case (inputs and parameters made before it are not counted), read from the profiler's memory
events; bench_core.cpp measures our side the same way from the arena.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F


def downsample(x, fir):
    c = x.shape[1]
    f2 = (fir[:, None] * fir[None, :]).flip([0, 1])[None, None].repeat(c, 1, 1, 1)
    x = F.pad(x, [1, 1, 1, 1])
    return F.conv2d(x, f2, stride=2, groups=c)


class SmallDisc:
    def __init__(self, c0, c1, c2, res):
        g = torch.Generator().manual_seed(1)
        def p(shape, scale):
            return (torch.randn(shape, generator=g) * scale).requires_grad_(True)
        self.w1, self.b1 = p([c1, c0, 3, 3], 1 / math.sqrt(c0 * 9)), p([c1], 0.1)
        self.w2, self.b2 = p([c2, c1, 3, 3], 1 / math.sqrt(c1 * 9)), p([c2], 0.1)
        flat = c2 * (res // 4) ** 2
        self.wl, self.bl = p([1, flat], 1 / math.sqrt(flat)), p([1], 0.1)
        self.fir = torch.tensor([1, 3, 3, 1], dtype=torch.float32) / 8

    def params(self):
        return [self.w1, self.b1, self.w2, self.b2, self.wl, self.bl]

    def forward(self, x):
        gain = math.sqrt(2)
        h = F.leaky_relu(F.conv2d(x, self.w1, self.b1, padding=1), 0.2) * gain
        h = downsample(h, self.fir)
        h = F.leaky_relu(F.conv2d(h, self.w2, self.b2, padding=1), 0.2) * gain
        h = downsample(h, self.fir)
        return F.linear(h.flatten(1), self.wl, self.bl)

    def r1_step(self, x_real):
        x = x_real.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(self.forward(x).sum(), [x], create_graph=True)
        r1 = g.square().sum([1, 2, 3]).mean()
        r1.backward()
        for p in self.params():
            p.grad = None
        return r1


def peak_bytes(fn):
    """High-water mark of live tensor bytes allocated while fn runs (profiler memory events)."""
    with torch.autograd.profiler.profile(profile_memory=True) as prof:
        fn()
    # Every allocation and free appears as a "[memory]" event with +/- bytes.
    events = [e for e in prof.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_us())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def time_ms(fn, reps, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--config", required=True, help="JSON with the case sizes (written by bench_core)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = json.loads(a.config)
    g = torch.Generator().manual_seed(0)
    out = {}

    m, k, n = cfg["matmul"]
    A, B = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    fn = lambda: torch.matmul(A, B)
    out["matmul"] = {"time_ms": time_ms(fn, a.reps), "peak_bytes": peak_bytes(fn)}

    nb, cin, cout, hw = cfg["conv"]
    x = torch.randn(nb, cin, hw, hw, generator=g).requires_grad_(True)
    w = torch.randn(cout, cin, 3, 3, generator=g).requires_grad_(True)
    b = torch.randn(cout, generator=g).requires_grad_(True)
    def conv_step():
        y = F.conv2d(x, w, b, padding=1)
        y.sum().backward()
        x.grad = w.grad = b.grad = None
    out["conv2d_fwd_bwd"] = {"time_ms": time_ms(conv_step, a.reps), "peak_bytes": peak_bytes(conv_step)}

    nb, c0, c1, c2, res = cfg["r1"]
    d = SmallDisc(c0, c1, c2, res)
    xr = torch.randn(nb, c0, res, res, generator=g)
    fn = lambda: d.r1_step(xr)
    out["r1_step"] = {"time_ms": time_ms(fn, a.reps), "peak_bytes": peak_bytes(fn)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
