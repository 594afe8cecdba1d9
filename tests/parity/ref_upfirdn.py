"""ref_upfirdn.py: references for upfirdn2d (tensor/ops_upfirdn.cpp), StyleGAN2's FIR resampler.

PyTorch has no upfirdn2d; parity_lib.upfirdn2d_ref writes it with plain differentiable PyTorch
ops from StyleGAN2-ADA's documented semantics (zero insertion, pad/crop, true convolution with
the filter times gain, decimation), so autograd gives the first and second derivatives with
respect to x. The filter is a constant (not differentiated), as in StyleGAN2.
Filters are non-symmetric in most cases so that a flipped-filter bug cannot pass.
Layout: parity_lib.py; the C++ side is tests/test_parity_upfirdn.cpp.
"""
import torch

import parity_lib
from parity_lib import upfirdn2d_ref

F32 = torch.float32
F64 = torch.float64


def randn(*shape, dtype=F32):
    return torch.randn(shape, dtype=dtype)


def build(r):
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k / k.sum()
    # StyleGAN2 downsample2d: fw 4, down 2 -> pad ((fw - down + 1) // 2, (fw - down) // 2) = (1, 1)
    r.case("down2.sg2", lambda x, f: upfirdn2d_ref(x, f, down=(2, 2), pad=(1, 1, 1, 1)), [randn(2, 3, 8, 8), k],
           diff=[0])
    # StyleGAN2 upsample2d: up 2 -> pad ((fw + up - 1) // 2, (fw - up) // 2) = (2, 1), gain up^2
    r.case("up2.sg2", lambda x, f: upfirdn2d_ref(x, f, up=(2, 2), pad=(2, 1, 2, 1), gain=4.0), [randn(2, 3, 5, 5), k],
           diff=[0])
    # 2-D non-symmetric filter, no resampling, gain
    r.case("fir2d.gain", lambda x, f: upfirdn2d_ref(x, f, pad=(1, 2, 1, 1), gain=2.0), [randn(1, 2, 6, 7), randn(3, 4)],
           diff=[0])
    # anisotropic: up along x only, down along y only, asymmetric pads
    r.case("aniso", lambda x, f: upfirdn2d_ref(x, f, up=(2, 1), down=(1, 2), pad=(1, 2, 0, 1)),
           [randn(2, 2, 6, 5), randn(3, 2)], diff=[0])
    # negative padding crops; 1-D non-symmetric filter applied along both axes
    r.case("crop.fir1d", lambda x, f: upfirdn2d_ref(x, f, pad=(-1, 0, 0, -2), gain=3.0),
           [randn(1, 3, 7, 6), torch.tensor([1.0, 2.0, 4.0])], diff=[0])
    # up and down together (x2 up then x3 down)
    r.case("up2down3", lambda x, f: upfirdn2d_ref(x, f, up=(2, 2), down=(3, 3), pad=(2, 2, 1, 2)),
           [randn(1, 2, 7, 7), randn(5)], diff=[0])
    # non-contiguous input: H and W transposed
    r.case("down2.transposed", lambda x, f: upfirdn2d_ref(x.transpose(2, 3), f, down=(2, 2), pad=(1, 1, 1, 1)),
           [randn(1, 2, 6, 8), k], diff=[0])
    r.case("f64", lambda x, f: upfirdn2d_ref(x, f, up=(2, 2), down=(1, 1), pad=(1, 1, 2, 0), gain=1.5),
           [randn(2, 2, 4, 5, dtype=F64), randn(3, 3, dtype=F64)], diff=[0])
    r.case("f64.down2.sg2", lambda x, f: upfirdn2d_ref(x, f, down=(2, 2), pad=(1, 1, 1, 1)),
           [randn(1, 3, 6, 6, dtype=F64), k.to(F64)], diff=[0])


if __name__ == "__main__":
    parity_lib.main(__file__, 1005, build)
