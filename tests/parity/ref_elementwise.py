"""ref_elementwise.py: PyTorch references for the elementwise family (tensor/ops_elementwise.cpp).

Writes forward outputs, first gradients and double-backward gradients of every elementwise op in
tensor/ops.h (layout: parity_lib.py) to the safetensors file given on the command line; the C++
side is tests/test_parity_elementwise.cpp, which must use the same case names and the same
composition (transposes, slices, scalar arguments) as the lambdas below.

Inputs stay away from points where an op is not differentiable (|x| for abs, the clamp bounds,
0 for relu and leaky_relu) or not defined (log, sqrt and division near 0), except in the cases
that test ties on purpose (maximum, minimum: PyTorch splits the gradient in half on ties).
"""
import math

import torch
import torch.nn.functional as F

import parity_lib

F32 = torch.float32
F64 = torch.float64


def uni(shape, lo, hi, dtype=F32):
    return torch.rand(shape, dtype=dtype) * (hi - lo) + lo


def away0(shape, dtype=F32, lo=0.2, hi=2.0):
    """Values with |x| in [lo, hi], random sign."""
    mag = uni(shape, lo, hi, dtype)
    sign = torch.where(torch.rand(shape) < 0.5, -1.0, 1.0).to(dtype)
    return mag * sign


def randn(*shape, dtype=F32):
    return torch.randn(shape, dtype=dtype)


def ties(shape, dtype=F32):
    """Small integers as floats: many equal pairs."""
    return torch.randint(-2, 3, shape).to(dtype)


def build(r):
    # ---- binary, broadcasting ----
    for dt, sfx in ((F32, "f32"), (F64, "f64")):
        r.case(f"add.{sfx}", torch.add, [randn(3, 4, 5, dtype=dt), randn(3, 4, 5, dtype=dt)])
        r.case(f"add.bcast.{sfx}", torch.add, [randn(3, 1, 5, dtype=dt), randn(4, 5, dtype=dt)])
        r.case(f"sub.bcast.{sfx}", torch.sub, [randn(4, 1, dtype=dt), randn(1, 5, dtype=dt)])
        r.case(f"mul.bcast.{sfx}", torch.mul, [randn(2, 3, 4, dtype=dt), randn(3, 1, dtype=dt)])
        r.case(f"div.bcast.{sfx}", torch.div, [randn(3, 4, dtype=dt), away0((4,), dt, 0.5, 2.0)])
    # non-contiguous operands: a transposed and a strided slice
    r.case("mul.transposed", lambda a, b: a.t() * b, [randn(5, 4), randn(4, 5)])
    r.case("add.sliced", lambda a, b: a[:, ::2] + b, [randn(3, 8), randn(3, 4)])
    r.case("div.scalar_tensor", torch.div, [randn(2, 3), away0((), F32, 0.5, 2.0)])

    # ---- tensor-scalar ----
    r.case("add_scalar", lambda a: a + 2.5, [randn(3, 4)])
    r.case("sub_scalar", lambda a: a - 1.25, [randn(3, 4)])
    r.case("rsub_scalar", lambda a: 3.0 - a, [randn(3, 4)])
    r.case("mul_scalar", lambda a: a * -1.5, [randn(3, 4)])
    r.case("div_scalar", lambda a: a / 4.0, [randn(3, 4)])
    r.case("rdiv_scalar", lambda a: 2.0 / a, [away0((3, 4), F32, 0.5, 2.0)])

    # ---- unary ----
    for dt, sfx in ((F32, "f32"), (F64, "f64")):
        r.case(f"neg.{sfx}", torch.neg, [randn(3, 4, dtype=dt)])
        r.case(f"exp.{sfx}", torch.exp, [uni((3, 4), -2, 2, dt)])
        r.case(f"log.{sfx}", torch.log, [uni((3, 4), 0.2, 3, dt)])
        r.case(f"sqrt.{sfx}", torch.sqrt, [uni((3, 4), 0.2, 3, dt)])
        r.case(f"rsqrt.{sfx}", torch.rsqrt, [uni((3, 4), 0.2, 3, dt)])
        r.case(f"pow2.5.{sfx}", lambda x: torch.pow(x, 2.5), [uni((3, 4), 0.2, 2, dt)])
        r.case(f"square.{sfx}", torch.square, [randn(3, 4, dtype=dt)])
        r.case(f"sigmoid.{sfx}", torch.sigmoid, [randn(3, 4, dtype=dt) * 2])
        r.case(f"tanh.{sfx}", torch.tanh, [randn(3, 4, dtype=dt) * 2])
        r.case(f"gelu.{sfx}", F.gelu, [randn(3, 4, dtype=dt) * 2])
        r.case(f"lrelu.{sfx}", lambda x: F.leaky_relu(x, 0.2) * math.sqrt(2), [away0((3, 4), dt, 0.05, 2)])
    r.case("pow3", lambda x: torch.pow(x, 3.0), [randn(3, 4)])
    r.case("pow-1.5", lambda x: torch.pow(x, -1.5), [uni((3, 4), 0.3, 2)])
    r.case("pow0.5", lambda x: torch.pow(x, 0.5), [uni((3, 4), 0.3, 2)])
    r.case("abs", torch.abs, [away0((3, 4))])
    r.case("sign", torch.sign, [torch.tensor([[-2.0, 0.0, 3.5], [0.0, -0.1, 1e-30]])], diff=[])
    r.case("sin", torch.sin, [randn(3, 4) * 2])
    r.case("cos", torch.cos, [randn(3, 4) * 2])
    r.case("erf", torch.erf, [randn(3, 4)])
    r.case("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), [randn(3, 4) * 2])
    r.case("gelu_tanh.f64", lambda x: F.gelu(x, approximate="tanh"), [randn(3, 4, dtype=F64) * 2])
    r.case("lrelu_default", F.leaky_relu, [away0((3, 4), F32, 0.05, 2)])
    r.case("relu", F.relu, [away0((3, 4), F32, 0.05, 2)])
    r.case("softplus", F.softplus, [uni((3, 4), -6, 6)])
    r.case("softplus.f64", F.softplus, [uni((3, 4), -6, 6, F64)])
    # non-contiguous unary inputs
    r.case("exp.transposed", lambda x: torch.exp(x.t()), [uni((4, 3), -2, 2)])
    r.case("lrelu.sliced", lambda x: F.leaky_relu(x[:, 1::2], 0.2) * math.sqrt(2), [away0((3, 8), F32, 0.05, 2)])

    # ---- selection ----
    cond = torch.rand(3, 4) < 0.5
    r.case("where", torch.where, [cond, randn(3, 4), randn(3, 4)])
    r.case("where.bcast", torch.where, [torch.rand(3, 1) < 0.5, randn(1, 4), randn(3, 4)])
    x = uni((4, 5), -2, 2)
    x = torch.where((x + 0.5).abs() < 0.05, x + 0.2, x)
    x = torch.where((x - 0.7).abs() < 0.05, x + 0.2, x)
    r.case("clamp", lambda t: torch.clamp(t, -0.5, 0.7), [x])
    r.case("clamp_min", lambda t: torch.clamp(t, min=-0.5), [x])
    r.case("clamp_max", lambda t: torch.clamp(t, max=0.7), [x])
    r.case("maximum.ties", torch.maximum, [ties((4, 5)), ties((4, 5))])
    r.case("minimum.ties", torch.minimum, [ties((4, 5)), ties((4, 5))])
    r.case("maximum.bcast", torch.maximum, [randn(3, 4), randn(4)])
    r.case("minimum.bcast.f64", torch.minimum, [randn(3, 1, dtype=F64), randn(4, dtype=F64)])

    # ---- comparisons (no grad; bool results) ----
    a, b = ties((3, 4)), ties((3, 4))
    for name, fn in (("eq", torch.eq), ("ne", torch.ne), ("lt", torch.lt), ("le", torch.le), ("gt", torch.gt),
                     ("ge", torch.ge)):
        r.case(f"{name}", fn, [a, b], diff=[])
    r.case("gt_scalar", lambda t: t > 0.0, [a], diff=[])
    r.case("lt_scalar", lambda t: t < 1.0, [a], diff=[])
    r.case("ge_scalar", lambda t: t >= 0.0, [a], diff=[])
    r.case("le_scalar", lambda t: t <= 1.0, [a], diff=[])
    r.case("eq.bcast", torch.eq, [ties((3, 1)), ties((4,))], diff=[])
    r.case("logical_not", torch.logical_not, [torch.rand(3, 4) < 0.5], diff=[])


if __name__ == "__main__":
    parity_lib.main(__file__, 1001, build)
