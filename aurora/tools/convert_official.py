#!/usr/bin/env python3
"""convert_official.py: convert the released Aurora generator checkpoint (zhujiapeng/Aurora,
aurora_v1.pth; docs/aurora-spec.md sections 7, 10, 11) into this project's generator state dict
(safetensors, parameter names of aurora/generator.h), plus the matching "generator" config.

    python3 aurora/tools/convert_official.py aurora_v1.pth aurora_v1.safetensors \\
        [--config configs/paper64.json] [--config-out aurora_v1.json] [--num-heads 8] [--key generator_smooth]

Needs only torch. docs/official-checkpoint.md has the full name table and the layout differences.

How it works:
  1. Load the checkpoint (CPU) and take the EMA generator `generator_smooth` (released inference
     does the same), else `generator`, else the file itself if it is a plain state dict.
  2. Infer the architecture from the names and shapes: resolutions from `output_res_{r}x{r}`, the
     order of the released `synthesis.net` modules (Fourier input + conv, ResidualConvBlock,
     ResidualAttnBlock), channels, adaptive kernels, experts, depths, MTM, widths.
  3. Build from that architecture the COMPLETE table of released keys with their expected shapes
     and our name for each (or: an alias, a duplicate of a mapped tensor the released module
     lists twice; or a constant buffer we do not store). Then every key of the checkpoint must be
     in the table (else "unknown key"), every table key must be in the checkpoint ("missing
     key"), with the expected shape ("shape mismatch"), aliases must equal their original, and
     constant FIR buffers must hold the [1,3,3,1] filter. All problems are listed, then it exits 1.
  4. Reshape the few tensors whose layout differs (1x1 modulated layers stored as 5-D conv
     weights; the MTM offset kernel gets our kernel-bank dim) and write the safetensors file with
     the config (compat_official = true) in its metadata "config".
The values that names and shapes cannot tell (heads, gains, learning-rate multipliers, Fourier
sampling) are the released ones (run_synthesize.py's g_config), or those of --config; with
--config the inferred structure must also equal that config's, key by key.
--verify-inverse checks that the table is a bijection between the mapped released keys and our
keys (every released key used exactly once: mapped, alias or constant) and prints it.
"""
import argparse
import json
import os
import re
import struct
import sys
from collections import OrderedDict

import torch

# Released values that the weights cannot tell (run_synthesize.py g_config; spec sections 1, 2).
RELEASED = {
    "mapping_lr_mul": 0.01, "text_lr_mul": 0.01, "attn_groups": 32, "residual_gain": 0.4, "attn_gain": 0.3,
    "fourier_sampling_rate": 4, "fourier_bandwidth": 1, "text_heads": 8, "attn_heads": 8,
}


class ConversionError(Exception):
    pass


# ---- The table --------------------------------------------------------------------------------

class Table:
    """Released key -> (kind, our key or original, expected shape, our shape)."""

    def __init__(self):
        self.rows = OrderedDict()

    def _put(self, key, row):
        if key in self.rows:
            raise ConversionError(f"internal: released key {key} listed twice")
        self.rows[key] = row

    def map(self, off, ours, shape, our_shape=None):
        self._put(off, ("map", ours, tuple(shape), tuple(our_shape or shape)))

    def alias(self, off, original, shape):
        self._put(off, ("alias", original, tuple(shape), None))

    def const(self, off, shape):
        self._put(off, ("const", None, tuple(shape), None))

    def dense(self, off, ours, cout, cin, bias=True):
        self.map(off + ".weight", ours + ".weight", (cout, cin))
        if bias:
            self.map(off + ".bias", ours + ".bias", (cout,))

    def norm(self, off, ours, c):
        self.map(off + ".weight", ours + ".weight", (c,))
        self.map(off + ".bias", ours + ".bias", (c,))

    def modconv(self, off, ours, cin, cout, k, n, w_dim, up=False, mtm=False, flat=False):
        """Released AdaptiveModulateConvLayer. flat: our 1x1 token-layout form (ModulatedLinear,
        MoE router) stores the weight as [Cout, Cin] instead of [1, Cout, Cin, 1, 1]."""
        shape = (n, cout, cin, k, k)
        self.map(off + ".weight", ours + ".weight", shape, (cout, cin) if flat else shape)
        self.map(off + ".bias", ours + ".bias", (cout,))
        self.dense(off + ".style", ours + ".style", cin, w_dim)
        if n > 1:
            self.dense(off + ".filter_weight", ours + ".filter_weight", n, w_dim)
        if up:
            self.const(off + ".filter", (4, 4))
        if mtm:
            m = 3 * k * k
            self.dense(off + ".mtm_style", ours + ".mtm.offset_conv.style", cin, w_dim)
            self.map(off + ".mtm_weight", ours + ".mtm.offset_conv.weight", (m, cin, k, k), (1, m, cin, k, k))
            self.map(off + ".mtm_bias", ours + ".mtm.out_bias", (1, m, 1, 1))
            self.map(off + ".mtm_scales", ours + ".mtm.out_scale", (1, m, 1, 1))


def build_table(a):
    """The complete released key table of architecture `a` (see infer())."""
    t = Table()
    W, wd = a["text_width"], a["w_dim"]
    t.map("w_avg", "mapping.w_avg", (wd,))
    # Text head (released TextHead; ours nn/text_head.h).
    if a["text_in_dim"] != W:
        t.dense("text_head.align_dim", "text_head.align_dim", W, a["text_in_dim"])
    R = a["text_mlp_ratio"] * W
    for i in range(a["text_layers"]):
        p = f"text_head.transformer.res_blocks.{i}"
        t.dense(p + ".attn.to_qkv", p + ".attn.to_qkv", 3 * W, W)
        t.dense(p + ".attn.to_out.0", p + ".attn.to_out", W, W)
        t.norm(p + ".ln_1", p + ".ln_1", W)
        t.norm(p + ".ln_2", p + ".ln_2", W)
        t.dense(p + ".mlp.c_fc", p + ".mlp.c_fc", R, W)
        t.dense(p + ".mlp.c_proj", p + ".mlp.c_proj", W, R)
        for k, shape in (("c_fc.weight", (R, W)), ("c_fc.bias", (R,)), ("c_proj.weight", (W, R)), ("c_proj.bias", (W,))):
            t.alias(f"{p}.{k}", f"{p}.mlp.{k}", shape)
    # Mapping.
    n = a["mapping_layers"]
    for i in range(n):
        cin = a["z_dim"] + W if i == 0 else a["mapping_hidden"]
        cout = wd if i == n - 1 else a["mapping_hidden"]
        t.dense(f"mapping.dense{i}", f"mapping.dense{i}", cout, cin)
    # Synthesis: the released net.<idx> modules in order.
    I = a["attn_inner"]
    for idx, m in enumerate(a["net"]):
        r, st = m["res"], a["stages"][m["res"]]
        C, N = st["channels"], st["num_kernels"]
        off, ours = f"synthesis.net.{idx}", f"synthesis.b{r}"
        if m["kind"] == "input":
            p = off + ".0"
            t.map(p + ".weight", ours + ".input.weight", (C, C))
            t.dense(p + ".affine", ours + ".input.affine", 4, wd)
            t.map(p + ".transform", ours + ".input.transform", (3, 3))
            t.map(p + ".freqs", ours + ".input.freqs", (C, 2))
            t.map(p + ".phases", ours + ".input.phases", (C,))
            t.modconv(off + ".1", ours + ".conv", C, C, 3, N, wd, mtm=st["mtm"])
        elif m["kind"] == "conv":
            p, q = off + ".0", f"{ours}.conv{m['i']}"
            cin = m["cin"]
            t.modconv(p + ".conv1", q + ".conv1", cin, C, 3, N, wd, up=m["up"])
            t.modconv(p + ".conv2", q + ".conv2", C, C, 3, N, wd, mtm=st["mtm"])
            if m["up"] or cin != C:
                t.map(p + ".skip_connection.weight", q + ".skip_connection.weight", (C, cin, 1, 1))
            if m["up"]:
                t.const(p + ".skip_connection.filter", (4, 4))
        else:  # attention
            p, q = off + ".0", f"{ours}.attn{m['i']}"
            t.norm(p + ".norm", q + ".norm", C)
            t.map(p + ".proj_in.weight", q + ".proj_in.weight", (I, C, 1, 1))
            E, H = st["num_experts"], a["expert_hidden"]
            for j in range(st["attn_depth"]):
                b, o = f"{p}.attn_blocks.{j}", f"{q}.block{j}"
                t.norm(b + ".norm1", o + ".norm1", I)
                t.dense(b + ".self_attn.to_qk", o + ".self_attn.to_qk", 2 * I, I, bias=False)
                t.dense(b + ".self_attn.to_v", o + ".self_attn.to_v", I, I, bias=False)
                t.modconv(b + ".self_attn.proj_out", o + ".self_attn.proj_out", I, I, 1, 1, wd, flat=True)
                t.norm(b + ".norm2", o + ".norm2", I)
                t.dense(b + ".cross_attn.to_q", o + ".cross_attn.to_q", I, I, bias=False)
                t.dense(b + ".cross_attn.to_kv", o + ".cross_attn.to_kv", 2 * I, W, bias=False)
                t.dense(b + ".cross_attn.proj_out.0", o + ".cross_attn.proj_out", I, I)
                t.norm(b + ".norm3", o + ".norm3", I)
                if E >= 2:
                    for e in range(E):
                        t.dense(f"{b}.ff.net.{e}.0.proj", f"{o}.moe.experts.{e}.w1", 2 * H, I)
                        t.dense(f"{b}.ff.net.{e}.2", f"{o}.moe.experts.{e}.w2", I, H)
                    t.modconv(b + ".ff.routing", o + ".moe.router", I, E, 1, 1, wd, flat=True)
                else:  # the released dense FeedForward lists its two layers twice
                    t.dense(b + ".ff.net.0.proj", o + ".ff.w1", 2 * H, I)
                    t.dense(b + ".ff.net.2", o + ".ff.w2", I, H)
                    for k, orig, shape in (("project_in.proj.weight", "net.0.proj.weight", (2 * H, I)),
                                           ("project_in.proj.bias", "net.0.proj.bias", (2 * H,)),
                                           ("proj_out.weight", "net.2.weight", (I, H)),
                                           ("proj_out.bias", "net.2.bias", (I,))):
                        t.alias(f"{b}.ff.{k}", f"{b}.ff.{orig}", shape)
            t.map(p + ".proj_out.weight", q + ".proj_out.weight", (C, I, 1, 1))
    for r, st in a["stages"].items():
        t.modconv(f"synthesis.output_res_{r}x{r}", f"synthesis.b{r}.torgb", st["channels"], a["image_channels"], 1,
                  st["num_kernels"], wd)
    if a["has_synthesis_filter"]:
        t.const("synthesis.filter", (4, 4))
    return t


# ---- Architecture inference ---------------------------------------------------------------------

def shape_of(sd, key):
    if key not in sd:
        raise ConversionError(f"missing key {key} (needed to infer the architecture)")
    return tuple(sd[key].shape)


def infer(sd, num_heads, text_heads):
    """The architecture of a released state dict, from its names and shapes (checked in full
    afterwards against build_table)."""
    a = {}
    res = sorted(int(m.group(1)) for k in sd for m in [re.fullmatch(r"synthesis\.output_res_(\d+)x\1\.weight", k)] if m)
    if not res:
        raise ConversionError("no synthesis.output_res_<r>x<r>.weight key: not a released Aurora generator "
                              "(text-conditional, one ToRGB per resolution)")
    if res[0] != 4 or any(b != 2 * x for x, b in zip(res, res[1:])):
        raise ConversionError(f"output resolutions {res}: expected 4, 8, ..., R")
    a["image_size"] = res[-1]
    a["image_channels"] = shape_of(sd, "synthesis.output_res_4x4.weight")[1]
    # Mapping.
    nmap = len({k.split(".")[1] for k in sd if re.fullmatch(r"mapping\.dense\d+\.weight", k)})
    if nmap == 0:
        raise ConversionError("no mapping.dense<i>.weight key")
    a["mapping_layers"] = nmap
    a["w_dim"] = shape_of(sd, f"mapping.dense{nmap - 1}.weight")[0]
    a["mapping_hidden"] = shape_of(sd, "mapping.dense0.weight")[0] if nmap > 1 else a["w_dim"]
    # Text head.
    blocks = {int(m.group(1)) for k in sd for m in [re.match(r"text_head\.transformer\.res_blocks\.(\d+)\.", k)] if m}
    a["text_layers"] = len(blocks)
    if "text_head.align_dim.weight" in sd:
        a["text_width"], a["text_in_dim"] = shape_of(sd, "text_head.align_dim.weight")
    elif blocks:
        a["text_width"] = a["text_in_dim"] = shape_of(sd, "text_head.transformer.res_blocks.0.attn.to_qkv.weight")[1]
    else:
        raise ConversionError("text head without align_dim and without blocks: cannot tell its width")
    W = a["text_width"]
    a["text_mlp_ratio"] = (shape_of(sd, "text_head.transformer.res_blocks.0.mlp.c_fc.weight")[0] // W) if blocks else 4
    a["z_dim"] = shape_of(sd, "mapping.dense0.weight")[1] - W
    if a["z_dim"] <= 0:
        raise ConversionError(f"mapping.dense0.weight {shape_of(sd, 'mapping.dense0.weight')}: its input must be z_dim + {W}")
    # Synthesis modules, in net order.
    idxs = sorted({int(m.group(1)) for k in sd for m in [re.match(r"synthesis\.net\.(\d+)\.", k)] if m})
    if idxs != list(range(len(idxs))):
        raise ConversionError(f"synthesis.net indices {idxs} are not 0..{len(idxs) - 1}")
    a["net"], stages = [], OrderedDict()
    r, inner, hidden = 2, None, None
    for idx in idxs:
        p = f"synthesis.net.{idx}.0"
        if f"{p}.affine.weight" in sd:
            if idx != 0:
                raise ConversionError(f"{p}: a Fourier input layer must be synthesis.net.0")
            r = 4
            c = shape_of(sd, f"synthesis.net.{idx}.1.weight")
            stages[r] = {"channels": c[1], "num_kernels": c[0], "conv_blocks": 0, "attn_modules": 0, "attn_depth": 0,
                         "num_experts": 0, "mtm": f"synthesis.net.{idx}.1.mtm_weight" in sd}
            a["net"].append({"kind": "input", "res": 4})
        elif f"{p}.conv1.weight" in sd:
            if not stages:
                raise ConversionError(f"{p}: a residual conv block before the Fourier input (synthesis.net.0)")
            w1 = shape_of(sd, f"{p}.conv1.weight")
            up = f"{p}.conv1.filter" in sd
            cin = w1[2]
            if up:
                r *= 2
                stages[r] = {"channels": w1[1], "num_kernels": w1[0], "conv_blocks": 0, "attn_modules": 0,
                             "attn_depth": 0, "num_experts": 0, "mtm": f"{p}.conv2.mtm_weight" in sd}
            st = stages[r]
            if (f"{p}.conv2.mtm_weight" in sd) != st["mtm"]:
                raise ConversionError(f"{p}.conv2: MTM differs from the other convs at resolution {r}")
            if st["attn_modules"] not in (0, st["conv_blocks"]):
                raise ConversionError(f"{p}: conv blocks and attention modules do not alternate at resolution {r}")
            a["net"].append({"kind": "conv", "res": r, "i": st["conv_blocks"], "up": up, "cin": cin})
            st["conv_blocks"] += 1
        elif f"{p}.proj_in.weight" in sd:
            if not stages:
                raise ConversionError(f"{p}: an attention block before the Fourier input")
            st = stages[r]
            if r == 4:
                raise ConversionError(f"{p}: attention at 4x4 is not supported (spec 2: none at 4x4)")
            if st["attn_modules"] != st["conv_blocks"] - 1:
                raise ConversionError(f"{p}: conv blocks and attention modules do not alternate at resolution {r}")
            i_ = shape_of(sd, f"{p}.proj_in.weight")[0]
            if inner not in (None, i_):
                raise ConversionError(f"{p}.proj_in.weight: attention width {i_} differs from {inner} elsewhere")
            inner = i_
            depth = len({int(m.group(1)) for k in sd for m in [re.match(re.escape(p) + r"\.attn_blocks\.(\d+)\.", k)] if m})
            experts = len({int(m.group(1)) for k in sd
                           for m in [re.match(re.escape(p) + r"\.attn_blocks\.0\.ff\.net\.(\d+)\.0\.proj\.weight$", k)] if m})
            if f"{p}.attn_blocks.0.ff.routing.weight" not in sd:
                experts = 0
                h = shape_of(sd, f"{p}.attn_blocks.0.ff.net.2.weight")[1]
            else:
                h = shape_of(sd, f"{p}.attn_blocks.0.ff.net.0.2.weight")[1]
            if hidden not in (None, h):
                raise ConversionError(f"{p}: expert hidden width {h} differs from {hidden} elsewhere")
            hidden = h
            if st["attn_modules"] and (depth, experts) != (st["attn_depth"], st["num_experts"]):
                raise ConversionError(f"{p}: depth/experts ({depth}, {experts}) differ from the other attention "
                                      f"modules at resolution {r}")
            st["attn_depth"], st["num_experts"] = depth, experts
            a["net"].append({"kind": "attn", "res": r, "i": st["attn_modules"]})
            st["attn_modules"] += 1
        else:
            raise ConversionError(f"synthesis.net.{idx}: not a Fourier input, residual conv or attention block "
                                  f"(keys: {sorted(k for k in sd if k.startswith(p))[:5]} ...)")
    if list(stages) != res:
        raise ConversionError(f"the synthesis blocks reach resolutions {list(stages)}, the ToRGB layers {res}")
    a["stages"] = stages  # stage 4's conv_blocks counts the ResConvs after the input conv, as ours
    a["attn_inner"] = inner or num_heads * 64
    a["expert_hidden"] = hidden or 4 * a["attn_inner"]
    if a["attn_inner"] % num_heads:
        raise ConversionError(f"attention width {a['attn_inner']} is not divisible by --num-heads {num_heads}")
    if W % text_heads:
        raise ConversionError(f"text width {W} is not divisible by {text_heads} heads")
    a["num_heads"], a["text_heads"] = num_heads, text_heads
    a["has_synthesis_filter"] = "synthesis.filter" in sd
    return a


def our_config(a, values):
    """Our "generator" config section (aurora/config.h) for architecture `a`."""
    return OrderedDict([
        ("image_size", a["image_size"]), ("image_channels", a["image_channels"]), ("z_dim", a["z_dim"]),
        ("w_dim", a["w_dim"]), ("mapping_layers", a["mapping_layers"]), ("mapping_hidden", a["mapping_hidden"]),
        ("mapping_lr_mul", values["mapping_lr_mul"]), ("text_in_dim", a["text_in_dim"]),
        ("text_width", a["text_width"]), ("text_heads", a["text_heads"]), ("text_layers", a["text_layers"]),
        ("text_mlp_ratio", a["text_mlp_ratio"]), ("text_lr_mul", values["text_lr_mul"]),
        ("attn_heads", a["num_heads"]), ("attn_head_dim", a["attn_inner"] // a["num_heads"]),
        ("attn_groups", values["attn_groups"]), ("expert_hidden", a["expert_hidden"]),
        ("residual_gain", values["residual_gain"]), ("attn_gain", values["attn_gain"]),
        ("fourier_sampling_rate", values["fourier_sampling_rate"]), ("fourier_bandwidth", values["fourier_bandwidth"]),
        ("compat_official", True),
        ("stages", OrderedDict((str(r), OrderedDict([
            ("channels", s["channels"]), ("conv_blocks", s["conv_blocks"]), ("attn_modules", s["attn_modules"]),
            ("attn_depth", s["attn_depth"]), ("num_kernels", s["num_kernels"]), ("num_experts", s["num_experts"]),
            ("mtm", s["mtm"])])) for r, s in a["stages"].items())),
    ])


# ---- Checking and converting --------------------------------------------------------------------

def fir_filter():
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def check(sd, table):
    """All problems of sd against the table, as messages (empty: ok)."""
    errors = []
    for k in sd:
        if k not in table.rows:
            errors.append(f"unknown key {k} {tuple(sd[k].shape)}: not part of the released generator layout")
    for k, (kind, target, shape, _) in table.rows.items():
        if k not in sd:
            errors.append(f"missing key {k}: expected shape {shape}")
            continue
        got = tuple(sd[k].shape)
        if got != shape:
            errors.append(f"shape mismatch for {k}: expected {shape}, got {got}")
            continue
        if sd[k].is_meta:
            continue  # --shapes: names and shapes only
        if kind == "alias" and target in sd and tuple(sd[target].shape) == shape and not torch.equal(sd[k], sd[target]):
            errors.append(f"duplicate key {k} differs from {target} (the released module stores one tensor "
                          f"under both names)")
        if kind == "const" and not torch.allclose(sd[k].double(), fir_filter(), atol=1e-6):
            errors.append(f"constant buffer {k} is not the [1,3,3,1] FIR filter")
    return errors


def verify_inverse(table, sd, out):
    """The inverse mapping (ours -> released) is a bijection onto the mapped released keys, every
    released key is used exactly once (mapped, alias or constant), and the round trip released ->
    ours -> released reproduces every released tensor exactly (aliases through their original)."""
    fwd = {k: row[1] for k, row in table.rows.items() if row[0] == "map"}
    inv = {}
    for k, ours in fwd.items():
        if ours in inv:
            raise ConversionError(f"not a bijection: {inv[ours]} and {k} both map to {ours}")
        inv[ours] = k
    if set(inv) != set(out):
        raise ConversionError(f"our keys {sorted(set(out) ^ set(inv))[:5]} have no inverse")
    uses = {k: 0 for k in sd}
    for k in table.rows:
        if k not in uses:
            raise ConversionError(f"released key {k} of the table is not in the checkpoint")
        uses[k] += 1
    bad = [k for k, n in uses.items() if n != 1]
    if bad:
        raise ConversionError(f"released keys not used exactly once: {bad[:10]}")
    back = {inv[ours]: t.reshape(table.rows[inv[ours]][2]) for ours, t in out.items()}
    for k, (kind, target, _, _) in table.rows.items():
        if sd[k].is_meta or kind == "const":
            continue
        b = back[k] if kind == "map" else back[target]
        if not torch.equal(b, sd[k].to(torch.float32)):
            raise ConversionError(f"round trip changes {k}")
    n_alias = sum(1 for r in table.rows.values() if r[0] == "alias")
    n_const = sum(1 for r in table.rows.values() if r[0] == "const")
    exact = "" if any(t.is_meta for t in sd.values()) else "; round trip released -> ours -> released exact"
    return (f"bijection: {len(fwd)} released keys <-> {len(inv)} ours; every one of the {len(sd)} released keys "
            f"used exactly once ({len(fwd)} mapped, {n_alias} aliases, {n_const} constants){exact}")


def save_safetensors(path, tensors, metadata):
    """The safetensors format: u64 header length, JSON header, raw little-endian data."""
    names = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16"}
    header, blobs, offset = {}, [], 0
    for k, t in tensors.items():
        t = t.detach().contiguous().cpu()
        if t.dtype not in names:
            raise ConversionError(f"{k}: unsupported dtype {t.dtype}")
        data = t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def load_state_dict(path, key):
    try:
        ckpt = torch.load(path, map_location="cpu")
    except (OSError, RuntimeError, EOFError) as e:
        raise ConversionError(f"cannot read {path}: {e}")
    if not isinstance(ckpt, dict):
        raise ConversionError(f"{path}: expected a dict, got {type(ckpt).__name__}")
    for k in ([key] if key else ["generator_smooth", "generator"]):
        if k in ckpt and isinstance(ckpt[k], dict):
            return ckpt[k], k
    if key:
        raise ConversionError(f"{path}: no key '{key}' (keys: {sorted(ckpt)[:10]})")
    if all(torch.is_tensor(v) for v in ckpt.values()):
        return ckpt, "<the file itself>"
    raise ConversionError(f"{path}: no 'generator_smooth' or 'generator' state dict (keys: {sorted(ckpt)[:10]})")


def convert(args):
    if args.shapes:  # a {key: shape} JSON: check names and shapes only, write nothing
        with open(args.input) as f:
            sd = {k: torch.empty(v, device="meta") for k, v in json.load(f).items()}
        which = "shapes"
    else:
        sd, which = load_state_dict(args.input, args.key)
    values = dict(RELEASED)
    given = None
    if args.config:
        with open(args.config) as f:
            root = json.load(f)
        given = root.get("generator", root)
        for k in values:
            if k in given:
                values[k] = given[k]
    if args.num_heads:
        values["text_heads"] = values["attn_heads"] = args.num_heads
    a = infer(sd, values["attn_heads"], values["text_heads"])
    cfg = our_config(a, values)
    if given is not None:
        diffs = []
        flat = lambda c: {**{k: v for k, v in c.items() if k != "stages"},  # noqa: E731
                          **{f"stages.{r}.{f}": x for r, st in c.get("stages", {}).items() for f, x in st.items()}}
        ours_flat, given_flat = flat(json.loads(json.dumps(cfg))), flat(given)
        for k, v in ours_flat.items():
            if k == "compat_official":
                continue
            if k not in given_flat:
                diffs.append(f"{k}: missing in --config (the checkpoint has {json.dumps(v)})")
            elif given_flat[k] != v:
                diffs.append(f"{k}: --config has {json.dumps(given_flat[k])}, the checkpoint {json.dumps(v)}")
        diffs += [f"{k}: in --config, not in the checkpoint" for k in given_flat
                  if k not in ours_flat and not k.split(".")[-1].startswith("_")]
        if diffs:
            raise ConversionError(f"{args.config} does not describe this checkpoint:\n  " + "\n  ".join(diffs))
    table = build_table(a)
    errors = check(sd, table)
    if errors:
        raise ConversionError(f"{args.input} ['{which}']: {len(errors)} problem(s):\n  " + "\n  ".join(errors))
    out = OrderedDict()
    for k, (kind, ours, _, our_shape) in table.rows.items():
        if kind == "map":
            out[ours] = sd[k].reshape(our_shape).to(torch.float32)
    n_buf = sum(out[ours].numel() for k, (kind, ours, _, _) in table.rows.items()
                if kind == "map" and k.split(".")[-1] in ("w_avg", "transform", "freqs", "phases"))
    n_alias = [k for k, r in table.rows.items() if r[0] == "alias"]
    n_const = [k for k, r in table.rows.items() if r[0] == "const"]
    print(f"convert_official: {args.input} ['{which}']: {len(sd)} keys")
    print(f"  mapped:  {len(out)} tensors -> {args.output}")
    print(f"  unused:  {len(n_alias)} duplicate keys (equal to a mapped tensor): "
          + (", ".join(n_alias[:4]) + (" ..." if len(n_alias) > 4 else "")))
    print(f"           {len(n_const)} constant [1,3,3,1] FIR buffers (not stored): "
          + (", ".join(n_const[:4]) + (" ..." if len(n_const) > 4 else "")))
    n_all = sum(t.numel() for t in out.values())
    print(f"  config:  compat_official = true, resolutions {list(a['stages'])}, "
          f"{n_all - n_buf} parameters ({(n_all - n_buf) / 1e6:.1f} M) + {n_buf} buffer values")
    if args.verify_inverse:
        print("  " + verify_inverse(table, sd, out))
    if args.print_table:
        for k, (kind, ours, shape, our_shape) in table.rows.items():
            print(f"  {k} {list(shape)} -> " + (f"{ours} {list(our_shape)}" if kind == "map" else f"({kind}"
                                                 + (f" of {ours})" if ours else ")")))
    if args.shapes:
        print("  --shapes: names and shapes checked, nothing written")
        return
    meta = {"config": json.dumps(cfg), "source": os.path.basename(args.input) + ":" + which,
            "converter": "aurora/tools/convert_official.py"}
    save_safetensors(args.output, out, meta)
    if args.config_out:
        with open(args.config_out, "w") as f:
            json.dump({"generator": cfg}, f, indent=2)
            f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="the released checkpoint (aurora_v1.pth)")
    ap.add_argument("output", help="our generator state dict (.safetensors)")
    ap.add_argument("--config", help="our config file (e.g. configs/paper64.json) to take gains, heads and "
                                     "learning-rate multipliers from and to check the structure against")
    ap.add_argument("--config-out", help="write the inferred config ({\"generator\": ...}) here")
    ap.add_argument("--num-heads", type=int, default=0, help="attention heads (released: 8)")
    ap.add_argument("--key", default="", help="the checkpoint entry (default: generator_smooth, then generator)")
    ap.add_argument("--verify-inverse", action="store_true", help="check and print the bijection of the mapping")
    ap.add_argument("--print-table", action="store_true", help="print every released key and its target")
    ap.add_argument("--shapes", action="store_true", help="INPUT is a JSON {key: shape} (no values): check the "
                                                          "names and shapes only and write nothing")
    args = ap.parse_args()
    try:
        convert(args)
    except ConversionError as e:
        sys.exit(f"convert_official: error: {e}")


if __name__ == "__main__":
    main()
