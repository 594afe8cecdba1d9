"""ref_deform.py: reference values of deform_conv2d from torchvision.ops.deform_conv2d (DCNv2).

Usage: ref_deform.py OUT.safetensors        (run by tests/test_deform.cpp through ENGINE_PYTHON,
                                             Debian's python3 with python3-torch and python3-torchvision)

For every case below it draws the inputs with a fixed seed in f32, then runs torchvision's CPU
kernel forward and backward (with a random grad_output) in f64 on those same values, so the
expected values carry no f32 rounding of their own. It writes, per case NAME:
    NAME.x NAME.offset NAME.weight [NAME.bias] [NAME.mask] NAME.grad_out      inputs, f32
    NAME.out NAME.dx NAME.doffset NAME.dweight [NAME.dbias] [NAME.dmask]      expected, f64
    NAME.tv32_out NAME.tv32_dx ...                                             torchvision in f32
    NAME.params  i64 [stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, weight_groups]
The tv32_ values let the C++ test report how far torchvision's own f32 result is from f64.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
    import torchvision
    from torchvision.ops import deform_conv2d
except Exception as e:  # the C++ test turns a non-zero exit into a failure with this message
    sys.stderr.write(f"ref_deform.py: cannot import torch/torchvision with {sys.executable}: {e}\n"
                     "install Debian's python3-torch and python3-torchvision (or set ENGINE_PYTHON)\n")
    sys.exit(2)

import safetensors_io


def fractional_offsets(gen, shape, lo, hi):
    """Offsets in [lo, hi) whose fractional part lies in [0.05, 0.95]: sampling points stay away
    from the integer grid, where bilinear interpolation has kinks (the f32 and f64 runs must take
    the same branch)."""
    whole = torch.randint(lo, hi, shape, generator=gen).float()
    return whole + 0.05 + 0.9 * torch.rand(shape, generator=gen)


def make_case(gen, n, cin, cout, h, w, kh, kw, stride, pad, dil, wgroups, ogroups, use_mask, use_bias,
              offsets="fractional"):
    ho = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    wo = (w + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    t = {}
    t["x"] = torch.randn(n, cin, h, w, generator=gen)
    t["weight"] = torch.randn(cout, cin // wgroups, kh, kw, generator=gen) * 0.5
    oshape = (n, 2 * ogroups * kh * kw, ho, wo)
    if offsets == "fractional":
        t["offset"] = fractional_offsets(gen, oshape, -2, 2)
    elif offsets == "zero":
        t["offset"] = torch.zeros(oshape)
    elif offsets == "integer":
        t["offset"] = torch.randint(-2, 3, oshape, generator=gen).float()
    elif offsets == "far":  # many points far outside the image, some inside
        t["offset"] = fractional_offsets(gen, oshape, -3 * max(h, w), 3 * max(h, w))
    else:
        raise ValueError(offsets)
    if use_bias:
        t["bias"] = torch.randn(cout, generator=gen)
    if use_mask:
        # Aurora's mask is 2 * sigmoid(.) in [0, 2]
        t["mask"] = 2 * torch.rand(n, ogroups * kh * kw, ho, wo, generator=gen)
    t["grad_out"] = torch.randn(n, cout, ho, wo, generator=gen)
    t["params"] = torch.tensor([stride[0], stride[1], pad[0], pad[1], dil[0], dil[1], wgroups], dtype=torch.int64)
    return t


def run(t, dtype):
    """torchvision forward + backward in `dtype`; returns out and the input gradients."""
    names = [k for k in ("x", "offset", "weight", "bias", "mask") if k in t]
    leaves = {k: t[k].to(dtype).clone().requires_grad_(True) for k in names}
    p = t["params"].tolist()
    out = deform_conv2d(leaves["x"], leaves["offset"], leaves["weight"], bias=leaves.get("bias"),
                        stride=(p[0], p[1]), padding=(p[2], p[3]), dilation=(p[4], p[5]), mask=leaves.get("mask"))
    out.backward(t["grad_out"].to(dtype))
    res = {"out": out.detach()}
    for k in names:
        res["d" + k] = leaves[k].grad.detach()
    return res


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: ref_deform.py OUT.safetensors")
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(20240607)
    cases = {
        # the gradcheck-sized case, with mask and bias
        "basic": make_case(gen, 2, 4, 6, 5, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, True, True),
        # plain DCNv1: no mask, no bias
        "nomask": make_case(gen, 2, 4, 6, 5, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, False, False),
        # stride 2, dilation 2, asymmetric padding and kernel, non-square input
        "strided": make_case(gen, 2, 3, 5, 9, 8, 3, 2, (2, 2), (2, 1), (2, 2), 1, 1, True, True),
        "stride_hw": make_case(gen, 1, 2, 3, 7, 9, 3, 3, (1, 2), (0, 1), (2, 1), 1, 1, True, False),
        # two offset groups and two weight groups
        "groups": make_case(gen, 2, 4, 6, 6, 5, 3, 3, (1, 1), (1, 1), (1, 1), 2, 2, True, True),
        # offset groups and weight groups that differ (4 offset groups, 2 weight groups)
        "groups_mixed": make_case(gen, 1, 8, 4, 5, 6, 3, 3, (1, 1), (1, 1), (1, 1), 2, 4, True, False),
        # Aurora's MTM: batch B = 3 folded into channels, B weight groups and B offset groups
        "aurora_b3": make_case(gen, 1, 3 * 8, 3 * 6, 8, 8, 3, 3, (1, 1), (1, 1), (1, 1), 3, 3, True, False),
        # MTM at initialisation: zero offsets, integer sampling points, y = -1 and x = -1 at the border
        "zero_offsets": make_case(gen, 1, 3 * 4, 3 * 5, 6, 6, 3, 3, (1, 1), (1, 1), (1, 1), 3, 3, True, False,
                                  offsets="zero"),
        "integer_offsets": make_case(gen, 2, 4, 6, 5, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1, 2, True, True,
                                     offsets="integer"),
        # most sampling points outside the image
        "far_offsets": make_case(gen, 2, 4, 6, 5, 5, 3, 3, (1, 1), (1, 1), (1, 1), 1, 1, True, True, offsets="far"),
    }
    out = {}
    for name, t in cases.items():
        for k, v in t.items():
            out[f"{name}.{k}"] = v
        for k, v in run(t, torch.float64).items():
            out[f"{name}.{k}"] = v
        for k, v in run(t, torch.float32).items():
            out[f"{name}.tv32_{k}"] = v
    meta = {"cases": ",".join(cases), "torch": torch.__version__, "torchvision": torchvision.__version__}
    safetensors_io.save(sys.argv[1], out, meta)


if __name__ == "__main__":
    main()
