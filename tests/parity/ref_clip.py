"""ref_clip.py: PyTorch reference of the CLIP towers, the CLIP preprocessing, the multi-level CLIP
loss and the CLIP score (aurora/clip.h, aurora/clip_loss.h; docs/aurora-spec.md 1 and 8a).

transformers is not installed, so CLIP is written here from the architecture (Radford et al. 2021,
as Hugging Face's CLIPModel lays it out) as plain torch modules whose state_dict names are those
of openai/clip-vit-large-patch14. Independent of the engine's code paths: attention
is written out on [B, H, L, d] with the scale applied to the logits and a boolean causal mask
through masked_fill, the patch embedding is a real nn.Conv2d, the EOT row is taken with advanced
indexing, and every resize is F.interpolate (never an interpolation matrix).

Usage: ref_clip.py DIR CASE...   For each CASE (a name from CASES below) writes
    DIR/CASE.model.safetensors   random weights with the HF names (plus the position_ids buffers
                                 and logit_scale), config in the metadata
    DIR/CASE.ref.safetensors     inputs and expected outputs:
        ids, text/states, text/eot, text/pooled
        pixels, vision/embeds                          (already-preprocessed pixels)
        level/<r>  pyramid images in [-1, 1];  text_embeds used by the losses (= text/pooled)
        loss/<kind>/value, loss/<kind>/level<r>, loss/<kind>/grad<r>   kind in symmetric,
            image_to_text, cosine; grad = d total / d level image
        score/q/per_sample, score/q/score (quantised pipeline), score/f/... (float pipeline)
        resize/<i>/in, resize/<i>/out  (computed in f64, stored as f32; metadata resize/<i> = "in_h in_w out_h out_w kernel aa")
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)

CASES = {
    # text: vocab width layers heads mlp; vision: width layers heads mlp patch image; embed; B;
    # pyramid sizes; per-level weights
    "tiny": dict(text=(1000, 32, 2, 2, 64), vision=(48, 2, 2, 96, 4, 16), embed=24, B=3,
                 levels=(4, 8, 16, 32), level_weights=(0.5, 1.0, 1.5, 2.0), seed=11),
    "tiny_b": dict(text=(500, 32, 3, 4, 80), vision=(32, 3, 4, 64, 8, 32), embed=16, B=2,
                   levels=(8, 64), level_weights=(1.0, 0.25), seed=12),
}


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x, causal):
        B, L, W = x.shape
        d = W // self.heads

        def split(t):
            return t.reshape(B, L, self.heads, d).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        if causal:
            future = torch.ones(L, L, dtype=torch.bool).triu(1)
            logits = logits.masked_fill(future, float("-inf"))
        o = logits.softmax(-1) @ v
        return self.out_proj(o.transpose(1, 2).reshape(B, L, W))


class Mlp(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(quick_gelu(self.fc1(x)))


class Layer(nn.Module):
    def __init__(self, width, heads, hidden):
        super().__init__()
        self.self_attn = Attention(width, heads)
        self.layer_norm1 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = Mlp(width, hidden)
        self.layer_norm2 = nn.LayerNorm(width, eps=1e-5)

    def forward(self, x, causal):
        x = x + self.self_attn(self.layer_norm1(x), causal)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, n, width, heads, hidden):
        super().__init__()
        self.layers = nn.ModuleList([Layer(width, heads, hidden) for _ in range(n)])

    def forward(self, x, causal):
        for layer in self.layers:
            x = layer(x, causal)
        return x


class TextEmbeddings(nn.Module):
    def __init__(self, vocab, width):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Embedding(77, width)
        self.register_buffer("position_ids", torch.arange(77).unsqueeze(0))


class TextModel(nn.Module):
    def __init__(self, vocab, width, layers, heads, hidden):
        super().__init__()
        self.embeddings = TextEmbeddings(vocab, width)
        self.encoder = Encoder(layers, width, heads, hidden)
        self.final_layer_norm = nn.LayerNorm(width, eps=1e-5)

    def forward(self, ids):
        L = ids.shape[1]
        pos = self.embeddings.position_ids[:, :L]
        x = self.embeddings.token_embedding(ids) + self.embeddings.position_embedding(pos)
        return self.final_layer_norm(self.encoder(x, causal=True))


class VisionEmbeddings(nn.Module):
    def __init__(self, width, patch, image):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.patch_embedding = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        n = (image // patch) ** 2 + 1
        self.position_embedding = nn.Embedding(n, width)
        self.register_buffer("position_ids", torch.arange(n).unsqueeze(0))

    def forward(self, pixels):
        B = pixels.shape[0]
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # [B, g*g, V]
        cls = self.class_embedding.expand(B, 1, -1)
        return torch.cat([cls, patches], 1) + self.position_embedding(self.position_ids)


class VisionModel(nn.Module):
    def __init__(self, width, layers, heads, hidden, patch, image):
        super().__init__()
        self.embeddings = VisionEmbeddings(width, patch, image)
        self.pre_layrnorm = nn.LayerNorm(width, eps=1e-5)
        self.encoder = Encoder(layers, width, heads, hidden)
        self.post_layernorm = nn.LayerNorm(width, eps=1e-5)

    def forward(self, pixels):
        x = self.encoder(self.pre_layrnorm(self.embeddings(pixels)), causal=False)
        return self.post_layernorm(x[:, 0])


class Clip(nn.Module):
    def __init__(self, text, vision, embed):
        super().__init__()
        self.text_model = TextModel(*text)
        self.vision_model = VisionModel(*vision)
        self.visual_projection = nn.Linear(vision[0], embed, bias=False)
        self.text_projection = nn.Linear(text[1], embed, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(100.0)))
        self.image_size = vision[5]

    def encode_text(self, ids):
        states = self.text_model(ids)
        eot = ids.argmax(-1)
        return states, eot, self.text_projection(states[torch.arange(ids.shape[0]), eot])

    def encode_image(self, pixels):
        return self.visual_projection(self.vision_model(pixels))


def randomize(model):
    """Random weights with O(1) activations (LayerNorm affines away from 1/0, so they matter)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "logit_scale":
                continue
            if name.endswith("layer_norm1.weight") or name.endswith("layer_norm2.weight") or \
                    "layernorm.weight" in name or "layrnorm.weight" in name or "final_layer_norm.weight" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif p.dim() == 2 and "embedding" not in name:
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[1]))
            elif p.dim() == 4:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.5 * torch.randn_like(p))


def preprocess(img, size):
    """Aurora's clip_loss: [-1,1] -> [0,1], F.interpolate bicubic to size, CLIP mean/std."""
    x = (img + 1) / 2
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def clip_losses(model, levels, text_embeds, weights, kind):
    ft = F.normalize(text_embeds, dim=-1)
    B = ft.shape[0]
    per = []
    for img in levels:
        fi = F.normalize(model.encode_image(preprocess(img, model.image_size)), dim=-1)
        if kind == "cosine":
            per.append(-(fi * ft).sum(-1).mean())
        else:
            logits = model.logit_scale.exp() * fi @ ft.t()
            target = torch.arange(B)
            ce = F.cross_entropy(logits, target)
            if kind == "symmetric":
                ce = (ce + F.cross_entropy(logits.t(), target)) / 2
            per.append(ce)
    total = sum(w * l for w, l in zip(weights, per))
    return total, per


def clip_score(model, images, text_embeds, quantize):
    S = model.image_size
    if quantize:
        u8 = (images * 127.5 + 128).clamp(0, 255).floor()
        r = F.interpolate(u8, size=(S, S), mode="bicubic", align_corners=False, antialias=True)
        x = r.round().clamp(0, 255) / 255
    else:
        x = F.interpolate(images, size=(S, S), mode="bicubic", align_corners=False, antialias=True) / 2 + 0.5
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    fi = F.normalize(model.encode_image(x), dim=-1)
    per = 100 * (fi * F.normalize(text_embeds, dim=-1)).sum(-1)
    return per, torch.clamp(per.mean(), min=0)


RESIZES = [  # in_h in_w out_h out_w kernel antialias
    (4, 4, 16, 16, "bicubic", 0), (5, 7, 16, 13, "bicubic", 0), (32, 24, 16, 10, "bicubic", 0),
    (8, 8, 8, 8, "bicubic", 0), (6, 9, 11, 4, "bilinear", 0), (4, 4, 17, 17, "bilinear", 0),
    (5, 7, 16, 13, "bicubic", 1), (40, 33, 16, 10, "bicubic", 1), (9, 30, 23, 7, "bilinear", 1),
    (8, 8, 8, 8, "bicubic", 1), (64, 64, 224, 224, "bicubic", 0),
]


def run_case(d, name):
    c = CASES[name]
    torch.manual_seed(c["seed"])
    text, vision, embed, B = c["text"], c["vision"], c["embed"], c["B"]
    model = Clip(text, vision, embed)
    randomize(model)
    model.eval()
    sd = {k: v for k, v in model.state_dict().items()}
    meta = {
        "text": " ".join(map(str, text)), "vision": " ".join(map(str, vision)), "embed": str(embed),
        "B": str(B), "level_weights": " ".join(map(str, c["level_weights"])),
    }
    safetensors_io.save(os.path.join(d, name + ".model.safetensors"), sd, meta)

    out = {}
    # Token ids: SOT = vocab - 2, EOT = vocab - 1 (the largest id, as 49406/49407), zero padding
    # (OpenAI's); one caption of the full 77 tokens (EOT last) and one with EOT at position 1.
    vocab = text[0]
    ids = torch.zeros(B, 77, dtype=torch.int64)
    lengths = [9, 77, 2, 30][:B]
    for b, n in enumerate(lengths):
        ids[b, 0] = vocab - 2
        ids[b, 1:n - 1] = torch.randint(1, vocab - 2, (n - 2,))
        ids[b, n - 1] = vocab - 1
    # Row 0 is padded as HF's CLIPTokenizer pads (with EOT), so the pooled row must be the FIRST
    # maximum of the ids (torch.argmax returns the first).
    ids[0, lengths[0]:] = vocab - 1
    with torch.no_grad():
        states, eot, pooled = model.encode_text(ids)
    out["ids"] = ids
    out["text/states"], out["text/eot"], out["text/pooled"] = states, eot, pooled

    S = vision[5]
    pixels = torch.randn(B, 3, S, S)
    with torch.no_grad():
        out["pixels"], out["vision/embeds"] = pixels, model.encode_image(pixels)

    levels = [torch.rand(B, 3, r, r) * 2 - 1 for r in c["levels"]]
    for i, img in enumerate(levels):
        out[f"level/{i}"] = img
    out["text_embeds"] = pooled
    for kind in ("symmetric", "image_to_text", "cosine"):
        xs = [img.clone().requires_grad_(True) for img in levels]
        total, per = clip_losses(model, xs, pooled, c["level_weights"], kind)
        grads = torch.autograd.grad(total, xs)
        out[f"loss/{kind}/value"] = total.detach()
        for i, (l, g) in enumerate(zip(per, grads)):
            out[f"loss/{kind}/level{i}"] = l.detach()
            out[f"loss/{kind}/grad{i}"] = g

    with torch.no_grad():
        img = levels[-1]
        for tag, q in (("q", True), ("f", False)):
            per, score = clip_score(model, img, pooled, q)
            out[f"score/{tag}/per_sample"], out[f"score/{tag}/score"] = per, score

    for i, (ih, iw, oh, ow, kernel, aa) in enumerate(RESIZES):
        x = torch.randn(2, 3, ih, iw)
        out[f"resize/{i}/in"] = x
        # Computed in f64: PyTorch's f32 kernel computes the source coordinates in f32 and is itself
        # off by up to 2e-5 at 64 -> 224 (more than the f32 parity tolerance).
        out[f"resize/{i}/out"] = F.interpolate(x.double(), size=(oh, ow), mode=kernel, align_corners=False,
                                               antialias=bool(aa)).float()
        meta[f"resize/{i}"] = f"{ih} {iw} {oh} {ow} {kernel} {aa}"
    meta["resizes"] = str(len(RESIZES))
    safetensors_io.save(os.path.join(d, name + ".ref.safetensors"), out, meta)


def main():
    d = sys.argv[1]
    for name in sys.argv[2:]:
        run_case(d, name)


if __name__ == "__main__":
    main()
