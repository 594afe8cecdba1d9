"""ref_reduce.py: PyTorch references for reductions, softmax, log_softmax, cross_entropy,
layer_norm and group_norm (tensor/ops_reduce.cpp, ops_softmax.cpp, ops_norm.cpp).

Writes forward outputs, first gradients and double-backward gradients (layout: parity_lib.py);
the C++ side is tests/test_parity_reduce.cpp with the same case names and compositions.
amax/amin have one case with ties on purpose: PyTorch shares the gradient evenly among the tied
maxima, as ops.h promises. Elsewhere, random inputs have no ties.
"""
import torch
import torch.nn.functional as F

import parity_lib

F32 = torch.float32
F64 = torch.float64


def randn(*shape, dtype=F32):
    return torch.randn(shape, dtype=dtype)


def ties(*shape, dtype=F32):
    return torch.randint(-2, 3, shape).to(dtype)


def build(r):
    # ---- sum, mean ----
    for dt, sfx in ((F32, "f32"), (F64, "f64")):
        r.case(f"sum.all.{sfx}", lambda x: x.sum(), [randn(3, 4, 5, dtype=dt)])
        r.case(f"sum.dim1.{sfx}", lambda x: x.sum(1), [randn(3, 4, 5, dtype=dt)])
        r.case(f"mean.all.{sfx}", lambda x: x.mean(), [randn(3, 4, 5, dtype=dt)])
        r.case(f"mean.dims12_keep.{sfx}", lambda x: x.mean((1, 2), keepdim=True), [randn(3, 4, 5, dtype=dt)])
    r.case("sum.dims02_keep", lambda x: x.sum((0, 2), keepdim=True), [randn(3, 4, 5)])
    r.case("sum.neg_dim", lambda x: x.sum(-1), [randn(3, 4, 5)])
    r.case("sum.transposed", lambda x: x.t().sum(0), [randn(4, 6)])
    r.case("sum.large", lambda x: x.sum(1), [randn(4, 4096)])
    r.case("mean.dim0", lambda x: x.mean(0), [randn(5, 3)])

    # ---- amax, amin ----
    r.case("amax.dim1", lambda x: torch.amax(x, 1), [randn(3, 4, 5)])
    r.case("amax.all", lambda x: torch.amax(x, (0, 1, 2)), [randn(3, 4, 5)])
    r.case("amax.ties", lambda x: torch.amax(x, 1, keepdim=True), [ties(4, 6)])
    r.case("amin.dim0", lambda x: torch.amin(x, 0), [randn(3, 4, 5)])
    r.case("amin.ties", lambda x: torch.amin(x, (0, 1)), [ties(3, 4)])
    r.case("amax.f64", lambda x: torch.amax(x, -1), [randn(3, 5, dtype=F64)])

    # ---- logsumexp ----
    r.case("logsumexp.dim1", lambda x: torch.logsumexp(x, 1), [randn(3, 4, 5)])
    r.case("logsumexp.keep", lambda x: torch.logsumexp(x, (1, 2), keepdim=True), [randn(3, 4, 5)])
    r.case("logsumexp.large", lambda x: torch.logsumexp(x, 1), [randn(3, 6) * 40 + 100])
    r.case("logsumexp.f64", lambda x: torch.logsumexp(x, 0), [randn(4, 3, dtype=F64)])

    # ---- var ----
    r.case("var.dim1", lambda x: torch.var(x, 1, correction=1), [randn(3, 6, 2)])
    r.case("var.all_c0", lambda x: torch.var(x, (0, 1, 2), correction=0), [randn(3, 4, 5)])
    r.case("var.keep", lambda x: torch.var(x, (0, 2), correction=1, keepdim=True), [randn(3, 4, 5)])
    r.case("var.f64", lambda x: torch.var(x, 1, correction=0), [randn(4, 7, dtype=F64)])

    # ---- argmax (no grad, i64) ----
    r.case("argmax.dim1", lambda x: torch.argmax(x, 1), [randn(3, 7, 2)], diff=[])
    r.case("argmax.keep", lambda x: torch.argmax(x, -1, keepdim=True), [randn(4, 5)], diff=[])

    # ---- softmax, log_softmax ----
    for dt, sfx in ((F32, "f32"), (F64, "f64")):
        r.case(f"softmax.last.{sfx}", lambda x: torch.softmax(x, -1), [randn(4, 7, dtype=dt) * 2])
        r.case(f"log_softmax.last.{sfx}", lambda x: torch.log_softmax(x, -1), [randn(4, 7, dtype=dt) * 2])
    r.case("softmax.dim1", lambda x: torch.softmax(x, 1), [randn(2, 5, 3)])
    r.case("softmax.large", lambda x: torch.softmax(x, -1), [randn(3, 5) * 30 + 200])
    r.case("softmax.transposed", lambda x: torch.softmax(x.t(), -1), [randn(6, 4)])
    r.case("log_softmax.dim0", lambda x: torch.log_softmax(x, 0), [randn(5, 3)])

    # ---- cross_entropy (mean over the batch) ----
    r.case("cross_entropy", F.cross_entropy, [randn(6, 5) * 2, torch.randint(0, 5, (6,))])
    r.case("cross_entropy.f64", F.cross_entropy, [randn(4, 3, dtype=F64), torch.randint(0, 3, (4,))])

    # ---- layer_norm ----
    r.case("layer_norm.affine", lambda x, w, b: F.layer_norm(x, (6,), w, b),
           [randn(4, 6) * 2 + 1, randn(6), randn(6)])
    r.case("layer_norm.2d", lambda x, w, b: F.layer_norm(x, (3, 4), w, b),
           [randn(2, 3, 4), randn(3, 4), randn(3, 4)])
    r.case("layer_norm.plain", lambda x: F.layer_norm(x, (5,)), [randn(3, 5)])
    r.case("layer_norm.weight_only", lambda x, w: F.layer_norm(x, (5,), w), [randn(3, 5), randn(5)])
    r.case("layer_norm.eps", lambda x, w, b: F.layer_norm(x, (4,), w, b, eps=1e-2),
           [randn(3, 4) * 0.1, randn(4), randn(4)])
    r.case("layer_norm.f64", lambda x, w, b: F.layer_norm(x, (6,), w, b),
           [randn(4, 6, dtype=F64), randn(6, dtype=F64), randn(6, dtype=F64)])

    # ---- group_norm ----
    r.case("group_norm.affine", lambda x, w, b: F.group_norm(x, 3, w, b),
           [randn(2, 6, 3, 3) * 2 + 0.5, randn(6), randn(6)])
    r.case("group_norm.plain", lambda x: F.group_norm(x, 2), [randn(2, 4, 5)])
    r.case("group_norm.g1", lambda x, w, b: F.group_norm(x, 1, w, b), [randn(3, 4, 2, 2), randn(4), randn(4)])
    r.case("group_norm.per_channel", lambda x, w, b: F.group_norm(x, 4, w, b),
           [randn(2, 4, 3, 3), randn(4), randn(4)])
    r.case("group_norm.f64", lambda x, w, b: F.group_norm(x, 2, w, b),
           [randn(2, 4, 3, 3, dtype=F64), randn(4, dtype=F64), randn(4, dtype=F64)])


if __name__ == "__main__":
    parity_lib.main(__file__, 1002, build)
