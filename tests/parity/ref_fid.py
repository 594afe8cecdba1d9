"""ref_fid.py: references for aurora/fid (tests/test_fid.cpp), independent of the engine.

Usage: ref_fid.py DIR MODE...
  resize    DIR/resize.in.safetensors: image batches KEY u8 [N, 3, H, W] (metadata: size).
            Writes DIR/resize.out.safetensors, per KEY:
              pytorch_fid.KEY  pytorch-fid's pipeline: torch F.interpolate(images.float() / 255,
                           (size, size), mode='bilinear', align_corners=False) * 2 - 1 (f32)
              tf1.KEY          TF1 resize_bilinear without half-pixel centres (torch-fidelity's
                           convention), computed in NumPy from the formula (positions in f32 as TF, values in f64): src = dst*in/out,
                           lo = floor(src), hi = min(lo+1, in-1), lerp on 0..255, then (v-128)/128
  frechet   DIR/frechet.in.safetensors: for each case CASE listed in metadata "cases", features
            CASE.f1 [N1, d] and CASE.f2 [N2, d] (f64). Writes DIR/frechet.out.safetensors with
            CASE.mu1/.sigma1/.mu2/.sigma2 (np.mean, np.cov(rowvar=False)) and CASE.fid [1]: the
            float64 Frechet distance as pytorch-fid's calculate_frechet_distance computes it
            (scipy.linalg.sqrtm(sigma1 @ sigma2, disp=False), retried with 1e-6 I offsets if not
            finite, real part kept).
  eigh      DIR/eigh.in.safetensors: a [n, n] (f64 symmetric). Writes eigh.out.safetensors: w
            (numpy.linalg.eigvalsh, ascending).
"""
import os
import sys

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def tf1_resize(img, size):
    """img float64 [N, C, H, W] on 0..255 -> [N, C, size, size]."""
    n, c, h, w = img.shape

    def axis(inp, out):
        # Positions in float32 as TF1 computes them (scale = in / out in f32, src = dst * scale);
        # the interpolation itself in float64.
        src = (np.arange(out, dtype=np.float32) * (np.float32(inp) / np.float32(out))).astype(np.float64)
        lo = np.floor(src).astype(np.int64)
        lo = np.minimum(lo, inp - 1)
        hi = np.minimum(lo + 1, inp - 1)
        return lo, hi, src - lo

    ylo, yhi, yf = axis(h, size)
    xlo, xhi, xf = axis(w, size)
    top = img[:, :, ylo, :]
    bot = img[:, :, yhi, :]
    rows = top + (bot - top) * yf[None, None, :, None]
    left = rows[:, :, :, xlo]
    right = rows[:, :, :, xhi]
    return left + (right - left) * xf[None, None, None, :]


def frechet(mu1, s1, mu2, s2, eps=1e-6):
    diff = mu1 - mu2
    covmean, _ = scipy.linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def main():
    d = sys.argv[1]
    for mode in sys.argv[2:]:
        inp, meta = safetensors_io.load(os.path.join(d, mode + ".in.safetensors"))
        out = {}
        if mode == "resize":
            size = int(meta["size"])
            for key, x in inp.items():
                out["pytorch_fid." + key] = F.interpolate(x.float() / 255, size=(size, size), mode="bilinear",
                                                          align_corners=False) * 2 - 1
                v = tf1_resize(x.numpy().astype(np.float64), size)
                out["tf1." + key] = torch.from_numpy((v - 128) / 128)
        elif mode == "frechet":
            for case in meta["cases"].split(","):
                f1 = inp[case + ".f1"].numpy()
                f2 = inp[case + ".f2"].numpy()
                mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
                s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
                out[case + ".mu1"] = torch.from_numpy(mu1)
                out[case + ".sigma1"] = torch.from_numpy(s1)
                out[case + ".mu2"] = torch.from_numpy(mu2)
                out[case + ".sigma2"] = torch.from_numpy(s2)
                out[case + ".fid"] = torch.tensor([frechet(mu1, s1, mu2, s2)], dtype=torch.float64)
        elif mode == "eigh":
            out["w"] = torch.from_numpy(np.linalg.eigvalsh(inp["a"].numpy()))
        else:
            sys.exit(f"ref_fid.py: unknown mode {mode}")
        safetensors_io.save(os.path.join(d, mode + ".out.safetensors"), out)


if __name__ == "__main__":
    main()
