"""ref_conv.py: PyTorch references for linear algebra and convolution (tensor/ops_matmul.cpp,
tensor/ops_conv.cpp): matmul, bmm, linear, conv2d, conv_transpose2d, conv2d_weight.

Writes forward outputs, first gradients and double-backward gradients (layout: parity_lib.py);
the C++ side is tests/test_parity_conv.cpp with the same case names and parameters.
Note [conv as three differentiable primitives] (ops.h): the double backward of conv2d goes
through conv_transpose2d and conv2d_weight, and theirs through conv2d; PyTorch's autograd gives
the reference for all of them. conv2d_weight has no PyTorch function of that name: its reference
is autograd of conv2d with respect to a dummy weight (parity_lib.conv2d_weight_ref), which is
linear in (x, gy) and differentiable in both.
"""
import torch
import torch.nn.functional as F

import parity_lib

F32 = torch.float32
F64 = torch.float64


def randn(*shape, dtype=F32):
    return torch.randn(shape, dtype=dtype)


def build(r):
    # ---- matmul (NumPy semantics), bmm ----
    r.case("matmul.2d", torch.matmul, [randn(3, 4), randn(4, 5)])
    r.case("matmul.batched_bcast", torch.matmul, [randn(2, 1, 3, 4), randn(5, 4, 6)])
    r.case("matmul.vec_mat", torch.matmul, [randn(4), randn(4, 5)])
    r.case("matmul.mat_vec", torch.matmul, [randn(3, 4), randn(4)])
    r.case("matmul.vec_vec", torch.matmul, [randn(4), randn(4)])
    r.case("matmul.batch_vec", torch.matmul, [randn(2, 3, 4), randn(4)])
    r.case("matmul.transposed", lambda a, b: torch.matmul(a.t(), b), [randn(4, 3), randn(4, 5)])
    r.case("matmul.large_k", torch.matmul, [randn(8, 300), randn(300, 6)])
    r.case("matmul.f64", torch.matmul, [randn(2, 3, 4, dtype=F64), randn(2, 4, 2, dtype=F64)])
    r.case("bmm", torch.bmm, [randn(2, 3, 4), randn(2, 4, 5)])
    r.case("bmm.f64", torch.bmm, [randn(3, 2, 4, dtype=F64), randn(3, 4, 3, dtype=F64)])

    # ---- linear: x W^T + b ----
    r.case("linear.bias", F.linear, [randn(4, 6), randn(3, 6), randn(3)])
    r.case("linear.nobias", F.linear, [randn(4, 6), randn(3, 6)])
    r.case("linear.3d", F.linear, [randn(2, 3, 6), randn(5, 6), randn(5)])
    r.case("linear.f64", F.linear, [randn(4, 5, dtype=F64), randn(2, 5, dtype=F64), randn(2, dtype=F64)])

    # ---- conv2d ----
    r.case("conv2d.pad1", lambda x, w, b: F.conv2d(x, w, b, 1, 1),
           [randn(2, 3, 7, 7), randn(4, 3, 3, 3), randn(4)])
    r.case("conv2d.stride2", lambda x, w: F.conv2d(x, w, None, 2, 0), [randn(2, 3, 8, 8), randn(4, 3, 3, 3)])
    r.case("conv2d.dilation2", lambda x, w, b: F.conv2d(x, w, b, 1, 2, 2),
           [randn(1, 2, 7, 7), randn(3, 2, 3, 3), randn(3)])
    r.case("conv2d.groups2", lambda x, w, b: F.conv2d(x, w, b, 1, 1, 1, 2),
           [randn(2, 4, 6, 6), randn(6, 2, 3, 3), randn(6)])
    r.case("conv2d.asym", lambda x, w: F.conv2d(x, w, None, (2, 1), (0, 1)), [randn(2, 3, 7, 6), randn(2, 3, 1, 3)])
    r.case("conv2d.1x1", lambda x, w, b: F.conv2d(x, w, b), [randn(2, 5, 4, 4), randn(3, 5, 1, 1), randn(3)])
    # batch-grouped weights (StyleGAN2 modulated conv): N = 2 samples, Cin 3, Cout 4
    r.case("conv2d.batch_grouped", lambda x, w: F.conv2d(x, w, None, 1, 1, 1, 2),
           [randn(1, 6, 5, 5), randn(8, 3, 3, 3)])
    r.case("conv2d.f64", lambda x, w, b: F.conv2d(x, w, b, 2, 1),
           [randn(2, 3, 6, 6, dtype=F64), randn(4, 3, 3, 3, dtype=F64), randn(4, dtype=F64)])
    r.case("conv2d.transposed_input", lambda x, w: F.conv2d(x.transpose(2, 3), w, None, 1, 1),
           [randn(1, 2, 5, 6), randn(3, 2, 3, 3)])

    # ---- conv_transpose2d (weight [Cout, Cin/groups, kh, kw] as in conv2d; y has Cout channels) ----
    r.case("conv_transpose2d.stride2", lambda y, w, b: F.conv_transpose2d(y, w, b, 2, 1, 1),
           [randn(2, 4, 5, 5), randn(4, 3, 3, 3), randn(3)])
    r.case("conv_transpose2d.plain", lambda y, w: F.conv_transpose2d(y, w), [randn(1, 3, 4, 4), randn(3, 2, 3, 3)])
    r.case("conv_transpose2d.groups2", lambda y, w, b: F.conv_transpose2d(y, w, b, 1, 1, 0, 2),
           [randn(2, 4, 5, 5), randn(4, 3, 3, 3), randn(6)])
    r.case("conv_transpose2d.dilation", lambda y, w: F.conv_transpose2d(y, w, None, 2, 2, 1, 1, 2),
           [randn(1, 2, 4, 4), randn(2, 3, 3, 3)])
    r.case("conv_transpose2d.f64", lambda y, w, b: F.conv_transpose2d(y, w, b, 2, 0, 1),
           [randn(2, 3, 3, 3, dtype=F64), randn(3, 2, 4, 4, dtype=F64), randn(2, dtype=F64)])

    # ---- conv2d_weight (the weight gradient of conv2d as a function of x and gy) ----
    cw = parity_lib.conv2d_weight_ref
    r.case("conv2d_weight.pad1", lambda x, gy: cw(x, gy, 3, 3, 1, 1, 1, 1), [randn(2, 3, 6, 6), randn(2, 4, 6, 6)])
    r.case("conv2d_weight.stride2", lambda x, gy: cw(x, gy, 3, 3, 2, 0, 1, 1), [randn(2, 3, 7, 7), randn(2, 4, 3, 3)])
    r.case("conv2d_weight.groups2", lambda x, gy: cw(x, gy, 3, 3, 1, 1, 1, 2), [randn(2, 4, 5, 5), randn(2, 6, 5, 5)])
    r.case("conv2d_weight.dilation2", lambda x, gy: cw(x, gy, 3, 3, 1, 2, 2, 1), [randn(1, 2, 6, 6), randn(1, 3, 6, 6)])
    r.case("conv2d_weight.f64", lambda x, gy: cw(x, gy, 2, 3, 1, 0, 1, 1),
           [randn(2, 2, 5, 5, dtype=F64), randn(2, 3, 4, 3, dtype=F64)])


if __name__ == "__main__":
    parity_lib.main(__file__, 1004, build)
