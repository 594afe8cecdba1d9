"""safetensors_io.py: a tiny safetensors reader and writer in pure Python (struct + json + torch).

The parity references (tests/parity/ref_*.py) write their inputs and expected results with it;
the C++ tests read them with io/safetensors. The `safetensors` pip package is not available on
the build machines, and the format is simple enough to write by hand:

    u64 little-endian N | N bytes of JSON header | raw little-endian C-order tensor bytes
    header = {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
              "__metadata__": {str: str}}      (offsets relative to the start of the data)

Usage as a script (used by tests/test_safetensors.cpp to check both implementations agree):
    safetensors_io.py --roundtrip IN OUT   read IN, write its tensors to OUT, adding
                                           metadata via=python
"""
import json
import os
import struct
import sys

import torch

# safetensors dtype name <-> torch dtype (the dtypes the engine supports).
DTYPES = {
    "F32": torch.float32,
    "F64": torch.float64,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "I32": torch.int32,
    "I64": torch.int64,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}


def _to_bytes(t):
    """Raw little-endian bytes of a tensor in C order (x86 and ARM hosts are little-endian)."""
    t = t.detach().contiguous().cpu()
    if t.numel() == 0:
        return b""
    # numpy has no bfloat16: reinterpret 2-byte floats as int16 first.
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def _from_bytes(data, dtype, shape):
    if dtype in (torch.bfloat16, torch.float16):
        raw = torch.frombuffer(bytearray(data), dtype=torch.int16) if data else torch.empty(0, dtype=torch.int16)
        return raw.view(dtype).reshape(shape).clone()
    if not data:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape).clone()


def save(path, tensors, metadata=None):
    """Write `tensors` (a dict name -> tensor, order kept) and string metadata to `path`,
    atomically (path.tmp, fsync, rename)."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    pos = 0
    for name, t in tensors.items():
        if t.dtype not in NAMES:
            raise ValueError(f"safetensors_io: tensor {name!r}: unsupported dtype {t.dtype}")
        b = _to_bytes(t)
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path):
    """Read `path`; returns (dict name -> tensor in file order, metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"safetensors_io: {path}: too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"safetensors_io: {path}: header length {n} exceeds the file")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    buf = data[8 + n:]
    metadata = header.pop("__metadata__", {})
    out = {}
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, end = e["data_offsets"]
        if not (0 <= b <= end <= len(buf)):
            raise ValueError(f"safetensors_io: {path}: tensor {name!r}: offsets out of range")
        out[name] = _from_bytes(buf[b:end], DTYPES[e["dtype"]], e["shape"])
    return out, metadata


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "--roundtrip":
        sys.exit("usage: safetensors_io.py --roundtrip IN OUT")
    tensors, meta = load(sys.argv[2])
    meta = dict(meta)
    meta["via"] = "python"
    save(sys.argv[3], tensors, meta)
