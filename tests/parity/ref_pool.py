"""ref_pool.py: PyTorch reference of max_pool2d / avg_pool2d (tensor/ops_pool.cpp).

Usage: ref_pool.py DIR   reads DIR/in.safetensors: x (f32 or f64 [N, C, H, W]) and metadata
"cases" = ';'-separated "op,kh,kw,sh,sw,ph,pw,count_include_pad" entries; writes
DIR/out.safetensors with one tensor per case, named by its index ("0", "1", ...), computed with
torch.nn.functional.max_pool2d / avg_pool2d (floor mode) in the input's dtype.
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def main():
    d = sys.argv[1]
    tensors, meta = safetensors_io.load(os.path.join(d, "in.safetensors"))
    x = tensors["x"]
    out = {}
    for i, spec in enumerate(meta["cases"].split(";")):
        op, kh, kw, sh, sw, ph, pw, cip = spec.split(",")
        k, s, p = (int(kh), int(kw)), (int(sh), int(sw)), (int(ph), int(pw))
        if op == "max":
            y = F.max_pool2d(x, k, stride=s, padding=p)
        else:
            y = F.avg_pool2d(x, k, stride=s, padding=p, count_include_pad=cip == "1")
        out[str(i)] = y
    safetensors_io.save(os.path.join(d, "out.safetensors"), out)


if __name__ == "__main__":
    main()
