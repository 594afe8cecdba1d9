"""convert_fid_inception.py: pytorch-fid's FID Inception weights -> safetensors for `aurora fid`.

    /usr/bin/python3 aurora/tools/convert_fid_inception.py pt_inception-2015-12-05-6726825d.pth OUT.safetensors

The input is pytorch-fid's state dict of the TF inception-2015-12-05 graph
(https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth).
Every floating tensor is written as F32 under its own name (Conv2d_1a_3x3.conv.weight, ...,
fc.weight); integer buffers (num_batches_tracked) are dropped. Needs torch only (no safetensors
package): the file format is an 8-byte header length, a JSON header and the raw tensor bytes.
With the safetensors package installed the same is the one-liner
    python3 -c "import sys, torch; from safetensors.torch import save_file; save_file({k: v.float().contiguous() for k, v in torch.load(sys.argv[1], map_location='cpu').items() if v.is_floating_point()}, sys.argv[2])" IN OUT
"""
import json
import os
import struct
import sys

import torch


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    state = torch.load(sys.argv[1], map_location="cpu")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    tensors = {k: v.detach().float().contiguous() for k, v in state.items() if v.is_floating_point()}
    if "Mixed_7c.branch_pool.conv.weight" not in tensors or "fc.weight" not in tensors:
        sys.exit(f"{sys.argv[1]}: not pytorch-fid's FID Inception state dict (no Mixed_7c / fc weights)")
    header, blobs, pos = {"__metadata__": {"source": os.path.basename(sys.argv[1])}}, [], 0
    for name in sorted(tensors):
        data = tensors[name].numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [pos, pos + len(data)]}
        blobs.append(data)
        pos += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, sys.argv[2])
    print(f"wrote {sys.argv[2]}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
