#!/usr/bin/env python3
"""Reference side of bench_fid: the FID Inception forward in PyTorch (tests/parity/ref_inception.py,
BatchNorm in eval mode) and pytorch-fid's Frechet distance (scipy.linalg.sqrtm) on the same sizes.

Usage: bench_fid_torch.py --threads T --batch B --dim D --reps R
Prints one JSON object {case: {"time_ms": median, "peak_bytes": 0}} (peak memory not measured).
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import scipy.linalg
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "parity"))
import ref_inception  # noqa: E402


def median_ms(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    net = ref_inception.FidInception().eval()
    x = torch.rand(a.batch, 3, 299, 299) * 2 - 1
    out = {}
    with torch.no_grad():
        out[f"inception_b{a.batch}"] = {"time_ms": median_ms(lambda: net(x), a.reps), "peak_bytes": 0}
    rng = np.random.RandomState(0)
    f1 = rng.randn(a.dim + 500, a.dim)
    f2 = rng.randn(a.dim + 500, a.dim) * 1.1
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)

    def frechet():
        covmean, _ = scipy.linalg.sqrtm(s1.dot(s2), disp=False)
        return np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)

    out[f"frechet_d{a.dim}"] = {"time_ms": median_ms(frechet, 1), "peak_bytes": 0}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
