"""ref_discriminator.py: PyTorch reference of Aurora's MS-I/O discriminator (docs/aurora-spec.md
section 8b; our implementation: aurora/discriminator.h, nn/disc_*.h).

Written from the spec and the header comments, independently of the C++ code, and on purpose
computed DIFFERENTLY wherever the C++ code takes a shortcut, so that the shortcut is checked:
  - every path phi_{i->j} runs on its own (C++ batches the paths along the batch dim);
  - the modulated 1x1 convs build the per-sample weights and run a batch-grouped conv
    (StyleGAN2's fused form; C++ scales inputs and outputs instead);
  - the L2 attention computes the full squared distance ||q_i||^2 + ||q_j||^2 - 2 q_i.q_j
    (C++ drops the row constant ||q_i||^2, which softmax ignores);
  - the FIR blur is a depthwise conv with the 4x4 filter outer([1,3,3,1])/64 (C++ uses upfirdn2d).

Usage: ref_discriminator.py WEIGHTS INPUTS OUTPUT
  WEIGHTS  the state dict written by nn::save_state_dict (names as aurora/discriminator.h)
  INPUTS   x/<k> (pyramid images), t (t_D), go/<i>_<j> (grad_output of D_ij); metadata
           "config" = the discriminator section as JSON
  OUTPUT   pred/<i>_<j>             D_ij [B]
           grad/x/<k>, grad/t, grad/param/<name>
                                     d L / d(...) with L = sum_ij <D_ij, go_ij>
           r1/g/<k>                  g_k = d(sum_ij sum_b D_ij) / d x_k  (create_graph)
           r1/value                  r1 = sum_k sum(g_k^2) / B
           r1/grad/x/<k>, r1/grad/t, r1/grad/param/<name>
                                     d r1 / d(...) (double backward; zeros where unused)
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

SQRT_HALF = math.sqrt(0.5)


def lrelu(x):
    return F.leaky_relu(x, 0.2) * math.sqrt(2.0)


class RefD:
    def __init__(self, cfg, p):
        self.cfg = cfg
        self.p = p
        r = cfg["image_size"]
        self.entries = []
        while r >= 4:
            self.entries.append(r)
            r //= 2
        self.exits = [e // 2 for e in self.entries[:-1]] + [1]
        self.L = len(self.entries)

    # ---- equalized-lr layers: weight / sqrt(fan_in) at run time, biases as stored
    def linear(self, x, name, act):
        w = self.p[name + ".weight"]
        y = F.linear(x, w / math.sqrt(w.shape[1]), self.p.get(name + ".bias"))
        return lrelu(y) if act else y

    def conv(self, x, name, stride, pad, act):
        w = self.p[name + ".weight"]
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        y = F.conv2d(x, w / math.sqrt(fan_in), self.p.get(name + ".bias"), stride, pad)
        return lrelu(y) if act else y

    # ---- [1,3,3,1] FIR as a depthwise 4x4 conv (symmetric filter: no flip needed)
    def fir(self, x, pad, stride):
        c = x.shape[1]
        f1 = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype)
        f = torch.outer(f1, f1) / 64.0
        return F.conv2d(F.pad(x, [pad] * 4), f[None, None].repeat(c, 1, 1, 1), stride=stride, groups=c)

    def attention(self, x, pre):
        n, c, h, w = x.shape
        d = self.cfg["attention_head_dim"]
        heads = c // d
        t = x.flatten(2).transpose(1, 2)  # [N, T, C]
        u = F.layer_norm(t, (c,), self.p[pre + "norm.weight"], self.p[pre + "norm.bias"], 1e-5)
        q = self.linear(u, pre + "qk", False).reshape(n, -1, heads, d).transpose(1, 2)  # [N, h, T, d]
        v = self.linear(u, pre + "v", False).reshape(n, -1, heads, d).transpose(1, 2)
        sq = q.square().sum(-1)  # [N, h, T]
        dist2 = sq[..., :, None] + sq[..., None, :] - 2.0 * q @ q.transpose(-1, -2)
        a = torch.softmax(-dist2 / math.sqrt(d), dim=-1)
        o = (a @ v).transpose(1, 2).reshape(n, -1, c)
        y = self.linear(o, pre + "out", False).transpose(1, 2).reshape(n, c, h, w)
        return (x + y) * SQRT_HALF

    def level(self, h, k):
        r = self.entries[k]
        pre = f"b{r}."
        if r in self.cfg["attention_resolutions"]:
            h = self.attention(h, pre + "attn.")
        if r == 4:
            return self.conv(self.conv(h, pre + "conv0", 1, 1, True), pre + "conv1", 1, 0, True)
        y = self.conv(self.fir(h, 1, 2), pre + "skip", 1, 0, False)
        m = self.conv(h, pre + "conv0", 1, 1, True)
        m = self.conv(self.fir(m, 2, 1), pre + "conv1", 2, 0, True)
        return (y + m) * SQRT_HALF

    def modconv(self, x, c, pre, demod, act):
        b, cin, h, w = x.shape
        wt = self.p[pre + "weight"]  # [Cout, Cin, 1, 1]
        cout = wt.shape[0]
        s = self.linear(c, pre + "style", False)  # [B, Cin]
        wb = (wt / math.sqrt(cin))[None] * s[:, None, :, None, None]  # [B, Cout, Cin, 1, 1]
        if demod:
            wb = wb * torch.rsqrt(wb.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8)
        y = F.conv2d(x.reshape(1, b * cin, h, w), wb.reshape(b * cout, cin, 1, 1), groups=b)
        y = y.reshape(b, cout, h, w) + self.p[pre + "bias"][None, :, None, None]
        return lrelu(y) if act else y

    def predictor(self, h, c, k):
        pre = f"pred{self.exits[k]}."
        n = self.cfg["predictor_layers"]
        m = h
        for layer in range(n):
            last = layer == n - 1
            m = self.modconv(m, c, pre + f"psi{layer}.", not last, not last)
        m = m + self.conv(h, pre + "skip", 1, 0, False)
        return m.mean(dim=[1, 2, 3])

    def text(self, t):
        c = t * torch.rsqrt(t.square().mean(dim=1, keepdim=True) + 1e-8)
        for k in range(self.cfg["text_layers"]):
            c = self.linear(c, f"text.fc{k}", True)
        return c

    def forward(self, xs, t):
        c = self.text(t)
        out = {}
        for i in range(self.L):
            h = self.conv(xs[i], f"b{self.entries[i]}.fromrgb", 1, 0, True)
            for j in range(i, self.L):
                h = self.level(h, j)
                out[(i, j)] = self.predictor(h, c, j)
        return out


def zeros_for_none(grads, like):
    return [g if g is not None else torch.zeros_like(x) for g, x in zip(grads, like)]


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: ref_discriminator.py WEIGHTS INPUTS OUTPUT")
    torch.set_num_threads(1)
    weights, _ = safetensors_io.load(sys.argv[1])
    inputs, meta = safetensors_io.load(sys.argv[2])
    cfg = json.loads(meta["config"])
    names = list(weights.keys())
    out = {}

    # Pass 1: forward and first-order gradients of L = sum_ij <D_ij, go_ij>.
    params = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
    d = RefD(cfg, params)
    xs = [inputs[f"x/{k}"].clone().requires_grad_(True) for k in range(d.L)]
    t = inputs["t"].clone().requires_grad_(True)
    preds = d.forward(xs, t)
    loss = sum((preds[(i, j)] * inputs[f"go/{i}_{j}"]).sum() for (i, j) in preds)
    wrt = xs + [t] + [params[k] for k in names]
    grads = zeros_for_none(torch.autograd.grad(loss, wrt, allow_unused=True), wrt)
    for (i, j), v in preds.items():
        out[f"pred/{i}_{j}"] = v.detach()
    for k in range(d.L):
        out[f"grad/x/{k}"] = grads[k]
    out["grad/t"] = grads[d.L]
    for k, g in zip(names, grads[d.L + 1:]):
        out["grad/param/" + k] = g

    # Pass 2: R1 through the double backward.
    params = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
    d = RefD(cfg, params)
    xs = [inputs[f"x/{k}"].clone().requires_grad_(True) for k in range(d.L)]
    t = inputs["t"].clone().requires_grad_(True)
    preds = d.forward(xs, t)
    total = sum(v.sum() for v in preds.values())
    gs = torch.autograd.grad(total, xs, create_graph=True)
    batch = xs[0].shape[0]
    r1 = sum(g.square().sum() for g in gs) / batch
    wrt = xs + [t] + [params[k] for k in names]
    grads = zeros_for_none(torch.autograd.grad(r1, wrt, allow_unused=True), wrt)
    for k in range(d.L):
        out[f"r1/g/{k}"] = gs[k].detach()
        out[f"r1/grad/x/{k}"] = grads[k]
    out["r1/value"] = r1.detach()
    out["r1/grad/t"] = grads[d.L]
    for k, g in zip(names, grads[d.L + 1:]):
        out["r1/grad/param/" + k] = g

    safetensors_io.save(sys.argv[3], {k: v.detach().contiguous() for k, v in out.items()},
                        {"script": "ref_discriminator.py", "torch": torch.__version__})


if __name__ == "__main__":
    main()
