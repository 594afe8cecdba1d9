"""make_official_tiny.py: a checkpoint in the format of the released Aurora generator
(zhujiapeng/Aurora `Text2ImageGenerator`, saved as {'generator_smooth': state_dict, ...} like
aurora_v1.pth) at a TINY configuration, with random values, for tests/test_convert_official.cpp.

The released checkpoint is not available offline, so this script rebuilds the released module
TREE -- the same module classes, attribute names, registration order and parameter shapes as
models/text_generator.py, read from the public code (docs/official-checkpoint.md lists them) --
as skeleton torch.nn.Modules without forward passes, and saves their state_dict(). The names
therefore come out of PyTorch's own state_dict machinery, including the released module's quirks:
  * shared submodules appear twice (text blocks: c_fc/c_proj and mlp.c_fc/mlp.c_proj; the dense
    FeedForward: project_in/proj_out and net.0/net.2), as torch.save writes them;
  * nn.Sequential indices (ResolutionSequential: net.<i>.0, net.0.1; to_out.0; proj_out.0);
  * persistent constant buffers: the [1,3,3,1] FIR `filter` of upsampling layers and of the
    synthesis network, Fourier `transform`/`freqs`/`phases`, the generator's `w_avg`.
This file is written independently of aurora/tools/convert_official.py (which maps names by rules).

The tiny configuration follows the released g_config of run_synthesize.py with small numbers:
resolution 16, fmaps_base 512, fmaps_max 32 (32 channels everywhere, so the hard-coded GroupNorm(32)
is valid), z_dim 16, w_dim 32, mapping 2 x 32, CLIP width 24 -> context 32, 1 text block,
num_heads 2, head_dim 8 (attention inner width 16), kernels {4: 1, 8: 1, 16: 2}, blocks
{4: 2, 8: 1, 16: 2}, attention at 8 and 16 with depth {8: 1, 16: 2}, experts {8: 2, 16: 1}
(1 < 2: a dense FeedForward, as the released code builds it), MTM at r < 32.

Usage: make_official_tiny.py OUTPUT.pth [--corrupt KIND] [--safetensors COPY.safetensors]
       make_official_tiny.py OUTPUT.json --released-shapes
  --released-shapes  the same module tree at the RELEASED configuration (run_synthesize.py's
                 g_config), built on the meta device: {key: shape} as JSON, for checking the
                 converter and configs/paper64.json against the released layout at full size
  --safetensors  also write the 'generator_smooth' tensors, by their released names, as
                 safetensors (for the C++ test's spot checks of the name mapping)
  KIND (for the converter's error tests): missing (drop a key), unknown (add a key), shape (a
  tensor of the wrong shape), alias (a duplicate that differs from its original)
The values: weights N(0, 1) / lr_mul as the released init; every bias, style bias, LayerNorm
affine and zero-initialised tensor gets its init value plus 0.2 N(0, 1) (generic values); the FIR
buffers hold the true filter (the converter checks them).
"""
import argparse
import json
import os
import sys
from collections import OrderedDict

import torch
import torch.nn as nn

CFG = dict(resolution=16, image_channels=3, z_dim=16, w_dim=32, mapping_fmaps=32, mapping_layers=2,
           clip_out_dim=24, context_dim=32, num_layers_text_enc=1, num_heads=2, head_dim=8,
           fmaps_base=512, fmaps_max=32, num_adaptive_kernels={4: 1, 8: 1, 16: 2},
           num_block_per_res={4: 2, 8: 1, 16: 2}, attn_resolutions=[8, 16], attn_depth={8: 1, 16: 2},
           num_experts={8: 2, 16: 1}, mtm=True, mlp_ratio=4)


# The released g_config of run_synthesize.py (fmaps_base 16384 = 32 << 9), for --released-shapes.
RELEASED_CFG = dict(resolution=64, image_channels=3, z_dim=128, w_dim=1024, mapping_fmaps=1024, mapping_layers=4,
                    clip_out_dim=768, context_dim=1024, num_layers_text_enc=4, num_heads=8, head_dim=64,
                    fmaps_base=16384, fmaps_max=1600, num_adaptive_kernels={4: 1, 8: 1, 16: 2, 32: 4, 64: 8},
                    num_block_per_res={4: 3, 8: 3, 16: 3, 32: 2, 64: 2}, attn_resolutions=[8, 16, 32, 64],
                    attn_depth={8: 2, 16: 2, 32: 2, 64: 1}, num_experts={8: 4, 16: 8, 32: 16, 64: 16}, mtm=True,
                    mlp_ratio=4)

DEVICE = "cpu"  # "meta" for --released-shapes: names and shapes without 4.7 GB of values


def randn(*shape, scale=1.0):
    return torch.randn(*shape, device=DEVICE) * scale


def init_like(value, *shape):
    """A constant init value plus 0.2 N(0, 1) (generic, not the special initial value)."""
    return torch.full(shape, float(value), device=DEVICE) + 0.2 * randn(*shape)


def fir_filter():
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = f[:, None] * f[None, :]
    return (f / f.sum()).to(DEVICE)


class Dense(nn.Module):  # released DenseLayer
    def __init__(self, cin, cout, bias=True, init_bias=0.0, lr_mul=1.0):
        super().__init__()
        self.weight = nn.Parameter(randn(cout, cin, scale=1.0 / lr_mul))
        self.bias = nn.Parameter(init_like(init_bias, cout) / lr_mul) if bias else None


class ModConv(nn.Module):  # released AdaptiveModulateConvLayer
    def __init__(self, cin, cout, w_dim, k, n, up=False, mtm=False):
        super().__init__()
        self.weight = nn.Parameter(randn(n, cout, cin, k, k))
        self.bias = nn.Parameter(init_like(0.0, cout))
        self.style = Dense(w_dim, cin, init_bias=1.0)
        if n > 1:
            self.filter_weight = Dense(w_dim, n, init_bias=1.0)
        if up:
            self.register_buffer("filter", fir_filter())
        if mtm:
            self.mtm_style = Dense(w_dim, cin, init_bias=1.0)
            self.mtm_weight = nn.Parameter(randn(3 * k * k, cin, k, k))
            self.mtm_bias = nn.Parameter(init_like(0.0, 1, 3 * k * k, 1, 1))
            self.mtm_scales = nn.Parameter(init_like(0.0, 1, 3 * k * k, 1, 1))


class Conv(nn.Module):  # released ConvLayer (no bias here)
    def __init__(self, cin, cout, k, up=False, zero=False):
        super().__init__()
        self.weight = nn.Parameter(init_like(0.0, cout, cin, k, k) if zero else randn(cout, cin, k, k))
        if up:
            self.register_buffer("filter", fir_filter())


class LN(nn.Module):  # torch LayerNorm / GroupNorm affine parameters
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(init_like(1.0, c))
        self.bias = nn.Parameter(init_like(0.0, c))


class MultiHeadAttention(nn.Module):
    def __init__(self, d, lr_mul):
        super().__init__()
        self.to_qkv = Dense(d, 3 * d, lr_mul=lr_mul)
        self.to_out = nn.Sequential(Dense(d, d, lr_mul=lr_mul), nn.Dropout(0.0))


class TextBlock(nn.Module):  # released ResidualAttentionBlock: attn, c_fc, c_proj, ln_1, ln_2, mlp
    def __init__(self, d, ratio, lr_mul):
        super().__init__()
        self.attn = MultiHeadAttention(d, lr_mul)
        self.c_fc = Dense(d, d * ratio, lr_mul=lr_mul)
        self.c_proj = Dense(d * ratio, d, lr_mul=lr_mul)
        self.ln_1 = LN(d)
        self.ln_2 = LN(d)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", self.c_fc), ("gelu", nn.Identity()), ("c_proj", self.c_proj)]))


class TextTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.res_blocks = nn.Sequential(*[TextBlock(c["context_dim"], 4, 0.01) for _ in range(c["num_layers_text_enc"])])


class TextHead(nn.Module):
    def __init__(self, c):
        super().__init__()
        if c["clip_out_dim"] != c["context_dim"]:
            self.align_dim = Dense(c["clip_out_dim"], c["context_dim"], init_bias=1.0, lr_mul=0.01)
        self.transformer = TextTransformer(c)


class Mapping(nn.Module):
    def __init__(self, c):
        super().__init__()
        n = c["mapping_layers"]
        for i in range(n):
            cin = c["z_dim"] + c["context_dim"] if i == 0 else c["mapping_fmaps"]
            cout = c["w_dim"] if i == n - 1 else c["mapping_fmaps"]
            self.add_module(f"dense{i}", Dense(cin, cout, lr_mul=0.01))


class Fourier(nn.Module):
    def __init__(self, w_dim, ch):
        super().__init__()
        self.weight = nn.Parameter(randn(ch, ch))
        self.affine = Dense(w_dim, 4)
        self.affine.weight.data = init_like(0.0, 4, w_dim)
        self.affine.bias.data = torch.tensor([1.0, 0.0, 0.0, 0.0]).to(DEVICE) + 0.2 * randn(4)
        self.register_buffer("transform", torch.eye(3, device=DEVICE) + 0.1 * randn(3, 3))
        self.register_buffer("freqs", randn(ch, 2))
        self.register_buffer("phases", torch.rand(ch, device=DEVICE) - 0.5)


class ResConv(nn.Module):  # released ResidualConvBlock
    def __init__(self, cin, cout, w_dim, n, up, mtm):
        super().__init__()
        self.conv1 = ModConv(cin, cout, w_dim, 3, n, up=up)
        self.conv2 = ModConv(cout, cout, w_dim, 3, n, mtm=mtm)
        self.skip_connection = Conv(cin, cout, 1, up=up) if (up or cin != cout) else nn.Identity()


class GEGLU(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.proj = Dense(cin, 2 * cout)


class FeedForward(nn.Module):
    def __init__(self, d, ratio, w_dim, num_experts):
        super().__init__()
        if num_experts < 2:
            self.project_in = GEGLU(d, d * ratio)
            self.proj_out = Dense(d * ratio, d)
            self.net = nn.Sequential(self.project_in, nn.Dropout(0.0), self.proj_out)
        else:
            self.net = nn.ModuleList([nn.Sequential(GEGLU(d, d * ratio), nn.Dropout(0.0), Dense(d * ratio, d))
                                      for _ in range(num_experts)])
            self.routing = ModConv(d, num_experts, w_dim, 1, 1)


class SelfAttention(nn.Module):
    def __init__(self, d, w_dim):
        super().__init__()
        self.to_qk = Dense(d, 2 * d, bias=False)
        self.to_v = Dense(d, d, bias=False)
        self.proj_out = ModConv(d, d, w_dim, 1, 1)


class CrossAttention(nn.Module):
    def __init__(self, d, ctx):
        super().__init__()
        self.to_q = Dense(d, d, bias=False)
        self.to_kv = Dense(ctx, 2 * d, bias=False)
        self.proj_out = nn.Sequential(Dense(d, d), nn.Dropout(0.0))


class AttentionBlock(nn.Module):
    def __init__(self, d, ctx, w_dim, num_experts):
        super().__init__()
        self.norm1 = LN(d)
        self.self_attn = SelfAttention(d, w_dim)
        self.norm2 = LN(d)
        self.cross_attn = CrossAttention(d, ctx)
        self.norm3 = LN(d)
        self.ff = FeedForward(d, 4, w_dim, num_experts)


class ResidualAttn(nn.Module):  # released ResidualAttnBlock
    def __init__(self, c, ch, depth, num_experts):
        super().__init__()
        inner = c["num_heads"] * c["head_dim"]
        self.norm = LN(ch)
        self.proj_in = Conv(ch, inner, 1)
        self.attn_blocks = nn.ModuleList([AttentionBlock(inner, c["context_dim"], c["w_dim"], num_experts)
                                          for _ in range(depth)])
        self.proj_out = Conv(inner, ch, 1, zero=True)  # zero_out=True


class Synthesis(nn.Module):
    def __init__(self, c):
        super().__init__()
        nf = lambda r: min(c["fmaps_base"] // r, c["fmaps_max"])  # noqa: E731
        w = c["w_dim"]
        self.net = nn.ModuleList()
        r = 4
        while r <= c["resolution"]:
            cin, cout, n = nf(r // 2), nf(r), c["num_adaptive_kernels"][r]
            attn = r in c["attn_resolutions"]
            for i in range(c["num_block_per_res"][r]):
                if r == 4 and i == 0:
                    self.net.append(nn.Sequential(Fourier(w, cin), ModConv(cin, cout, w, 3, n, mtm=c["mtm"])))
                else:
                    up = r > 4 and i == 0
                    self.net.append(nn.Sequential(ResConv(cin if r > 4 else cout, cout, w, n, up, c["mtm"] and r < 32)))
                if attn:
                    self.net.append(nn.Sequential(ResidualAttn(c, cout, c["attn_depth"][r], c["num_experts"][r])))
                cin = cout
            self.add_module(f"output_res_{r}x{r}", ModConv(cout, c["image_channels"], w, 1, n))
            r *= 2
        self.register_buffer("filter", fir_filter())


class Text2ImageGenerator(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.text_head = TextHead(c)
        self.mapping = Mapping(c)
        self.register_buffer("w_avg", randn(c["w_dim"]))
        self.synthesis = Synthesis(c)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("output")
    ap.add_argument("--corrupt", choices=["missing", "unknown", "shape", "alias"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--safetensors")
    ap.add_argument("--released-shapes", action="store_true",
                    help="write the RELEASED configuration's names and shapes as JSON {key: shape} (no values)")
    a = ap.parse_args()
    if a.released_shapes:
        global DEVICE
        DEVICE = "meta"
        sd = Text2ImageGenerator(RELEASED_CFG).state_dict()
        with open(a.output, "w") as f:
            json.dump({k: list(v.shape) for k, v in sd.items()}, f)
        print(f"wrote {a.output}: {len(sd)} released keys (shapes only)")
        return
    torch.manual_seed(a.seed)
    sd = Text2ImageGenerator(CFG).state_dict()
    other = Text2ImageGenerator(CFG).state_dict()  # the non-EMA generator: must not be picked
    if a.corrupt == "missing":
        del sd["synthesis.net.3.0.attn_blocks.0.cross_attn.to_kv.weight"]
    elif a.corrupt == "unknown":
        sd["synthesis.net.3.0.attn_blocks.0.cross_attn.to_k.weight"] = torch.zeros(16, 32)
    elif a.corrupt == "shape":
        sd["synthesis.net.1.0.conv2.weight"] = torch.zeros(1, 32, 31, 3, 3)
    elif a.corrupt == "alias":
        sd["text_head.transformer.res_blocks.0.c_fc.weight"] = sd["text_head.transformer.res_blocks.0.c_fc.weight"] + 1
    torch.save({"generator": other, "generator_smooth": sd, "step": 1234}, a.output)
    if a.safetensors:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import safetensors_io  # noqa: E402
        safetensors_io.save(a.safetensors, {k: v.clone() for k, v in sd.items()}, {"source": "make_official_tiny.py"})
    print(f"wrote {a.output}: {len(sd)} keys under 'generator_smooth'")


if __name__ == "__main__":
    main()
