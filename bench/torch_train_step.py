#!/usr/bin/env python3
"""PyTorch side of bench_train_step: one Aurora training step (or generator inference), built from
the parity references, timed and measured the way bench_train_step.cpp measures ours.

Networks (imported from tests/parity/, not re-implemented here):
  generator      ref_generator.RefG (text head + mapping + synthesis)
  discriminator  ref_discriminator.RefD
  text encoder   the small text encoder (aurora/small_text_encoder.h) wired from ref_text_head's
                 blocks (layer_norm, L2 attention, QuickGELU MLP): embedding[id % vocab] + pos,
                 the pre-LN blocks, the EOT state replaced by the mean of the word states, ln_final,
                 projection of the EOT state (t_D)
One training step, as aurora/trainer.cpp runs it at full resolution (every term and order the same):
  G_main  t_D = E(ids).pooled (no grad), t_hat = roll(t_D, 1); imgs = G(E(ids).states, eot, z_g);
          L_G = sum_ij mean sp(-D_ij(fake, t_D)) + match * sum_ij mean sp(D_ij(fake, t_hat)) + moe * L_moe
          (D called once on [fake; fake] with [t_D; t_hat], D's parameters frozen); backward; AdamW;
          w_avg <- lerp(mean w, w_avg, decay); EMA of G (lerp towards G, beta = 0.5^(B / half-life))
  D_main  t_D again (after G's update); fakes from z_d without grad; D on [real; fake; real; fake]
          with [t_D; t_D; t_hat; t_hat]; L_D = sum mean sp(-real) + sp(fake) + match * (sp(real_hat)
          + sp(fake_hat)); backward; AdamW (lr * k, betas ** k, k = interval / (interval + 1))
  D_r1    real pyramid (2x2 box means) requiring grad; g = grad(sum_ij sum_b D_ij, pyramid,
          create_graph); r1 = gamma / 2 * mean_b sum_k |g_k|^2; backward(interval * r1); AdamW
Optimizers: torch.optim.AdamW (weight_decay from the config, default 0); parameter .grad tensors
persist between steps (zero_grad(set_to_none=False)), as our flat gradient buffers do.

Measures: median step time over `iters` after `warmup` steps (GPU: CUDA events around each step,
after torch.cuda.synchronize()); peak memory of one more step:
  GPU  torch.cuda.max_memory_allocated() - memory_allocated() before the step (after
       reset_peak_memory_stats): the step's transient bytes, parameters/grads/moments excluded;
       also the absolute peak and torch.cuda.memory_reserved()
  CPU  the high-water mark of live tensor bytes allocated during the step, from the autograd
       profiler's [memory] events (bench_core_torch.peak_bytes): the same quantity our arena peak
       measures (bytes of tensors allocated during the step above those alive before it); not
       ru_maxrss, which counts the process's whole heap, allocator caching and libraries.
bf16 (precision "bf16"): forward passes under torch.autocast(device_type, dtype=torch.bfloat16).
f32 on CUDA: TF32 off for matmuls and cuDNN convolutions (PyTorch's cuDNN default is TF32 on);
"tf32": on for both.

Usage: torch_train_step.py JOB    (JSON written by bench_train_step; see its main())
Prints one JSON line on stdout.
"""
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "parity"))
import safetensors_io  # noqa: E402
import ref_text_head as th  # noqa: E402
from bench_core_torch import peak_bytes as cpu_peak_bytes  # noqa: E402
from ref_discriminator import RefD  # noqa: E402
from ref_generator import RefG, sub  # noqa: E402

EOT_ID = 49407


class SmallTextEncoder:
    """aurora/small_text_encoder.h from ref_text_head's pieces (parameters under `p`)."""

    def __init__(self, p, cfg):
        self.p, self.cfg = p, cfg
        self.nblocks = len({k.split(".")[2] for k in p if k.startswith("transformer.res_blocks.")})

    def __call__(self, ids):
        p, c = self.p, self.cfg
        lr_mul = c.get("lr_mul", 1.0)
        B, L = ids.shape
        x = p["token_embedding"][ids % p["token_embedding"].shape[0]] + p["positional_embedding"][:L]
        D = x.shape[-1]
        heads = c.get("heads", 4)
        for i in range(self.nblocks):
            pre = f"transformer.res_blocks.{i}"
            x = x + th.attention(p, th.layer_norm(p, x, pre + ".ln_1"), pre + ".attn", heads, lr_mul, (D // heads) ** -0.5)
            h = th.quick_gelu(th.equal_linear(p, th.layer_norm(p, x, pre + ".ln_2"), pre + ".mlp.c_fc", lr_mul))
            x = x + th.equal_linear(p, h, pre + ".mlp.c_proj", lr_mul)
        eot = ids.argmax(dim=1)  # EOT has the largest id
        pos = torch.arange(L, device=ids.device)[None, :]
        words = ((pos >= 1) & (pos < eot[:, None])).to(x.dtype)
        words = words / (eot[:, None] - 1).clamp(min=1).to(x.dtype)
        mean_words = torch.einsum("bl,bld->bd", words, x)
        is_eot = (pos == eot[:, None]).to(x.dtype)[..., None]
        x = x * (1 - is_eot) + is_eot * mean_words[:, None, :]
        states = th.layer_norm(p, x, "ln_final")
        wp = p["text_projection.weight"]
        pooled = F.linear(states[torch.arange(B, device=ids.device), eot], wp * (lr_mul / math.sqrt(wp.shape[1])))
        return states, eot, pooled


def pyramid(x, levels):
    out = [x]
    for _ in range(levels - 1):
        out.append(F.avg_pool2d(out[-1], 2))
    return out


def sp(x):
    return F.softplus(x)


class Step:
    def __init__(self, job):
        dev = torch.device(job["device"])
        self.dev = dev
        self.train = job["train"]
        cfg = json.load(open(job["config"]))
        self.gcfg, self.dcfg = cfg["generator"], cfg["discriminator"]
        self.tcfg = self.train.get("small_text_encoder", {})
        gw, _ = safetensors_io.load(job["g_weights"])
        inputs, meta = safetensors_io.load(job["inputs"])
        buffers = set(json.loads(meta.get("buffers", "[]")))
        self.gp = {k: v.to(dev).requires_grad_(k not in buffers) for k, v in gw.items()}
        self.G = RefG(self.gcfg, sub(self.gp, "generator."))
        self.E = SmallTextEncoder(sub(self.gp, "text_encoder."), self.tcfg)
        self.inputs = {k: v.to(dev) for k, v in inputs.items()}
        self.bf16 = job["precision"] == "bf16"
        if dev.type == "cuda":
            # f32 means f32 GEMMs and convolutions (PyTorch's cuDNN default is TF32), as ours;
            # "tf32" allows TF32 in both, as our cuBLASLt TF32 mode.
            tf32 = job["precision"] == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        if job.get("d_weights"):
            dw, _ = safetensors_io.load(job["d_weights"])
            self.dp = {k: v.to(dev).requires_grad_(True) for k, v in dw.items()}
            self.D = RefD(self.dcfg, self.dp)
            t = self.train
            wd_g, wd_d = t.get("g_weight_decay", 0.0), t.get("d_weight_decay", 0.0)
            eps = t.get("eps", 1e-8)
            b1, b2 = t.get("beta1", 0.0), t.get("beta2", 0.99)
            interval = t.get("r1_interval", 16)
            k = interval / (interval + 1) if interval > 0 else 1.0
            g_trained = [v for n, v in self.gp.items() if n not in buffers]
            self.g_opt = torch.optim.AdamW(g_trained, lr=t.get("g_lr", 0.0025), betas=(b1, b2), eps=eps, weight_decay=wd_g)
            self.d_opt = torch.optim.AdamW(list(self.dp.values()), lr=t.get("d_lr", 0.0025) * k,
                                           betas=(b1 ** k, b2 ** k), eps=eps, weight_decay=wd_d)
            self.ema = {n: v.detach().clone() for n, v in self.gp.items()}
            self.g_trained_names = [n for n in self.gp if n not in buffers]
            self.buffers = buffers

    def autocast(self):
        if not self.bf16:
            return torch.autocast(self.dev.type, enabled=False)
        return torch.autocast(self.dev.type, dtype=torch.bfloat16)

    def generate(self, ids, z):
        states, eot, _ = self.E(ids)
        images, moe, w, _, _ = self.G.forward(z, states, eot)
        return images, moe, w

    def fake_pyramid(self, images):
        return [images[r].float() for r in sorted(images, reverse=True)]

    def step(self):
        t = self.train
        ids, images, z_g, z_d = (self.inputs[k] for k in ("ids", "images", "z_g", "z_d"))
        B = ids.shape[0]
        match, moe_w = t.get("match_weight", 1.0), t.get("moe_loss_weight", 1.0)
        out = {}
        # ---- G_main
        self.g_opt.zero_grad(set_to_none=False)
        for p in self.dp.values():
            p.requires_grad_(False)
        with self.autocast():
            with torch.no_grad():
                t_d = self.E(ids)[2].float()
            t_hat = torch.roll(t_d, 1, 0)
            imgs, moe, w = self.generate(ids, z_g)
            fake = self.fake_pyramid(imgs)
            preds = self.D.forward([torch.cat([f, f]) for f in fake], torch.cat([t_d, t_hat]))
            g_adv = sum(sp(-v[:B].float()).mean() for v in preds.values())
            g_match = sum(sp(v[B:].float()).mean() for v in preds.values())
            loss = g_adv + match * g_match + moe_w * moe.float()
        loss.backward()
        out["g_loss"] = loss
        for p in self.dp.values():
            p.requires_grad_(True)
        self.g_opt.step()
        with torch.no_grad():
            wa = self.gp["generator.mapping.w_avg"]
            wa.copy_(w.detach().float().mean(0).lerp(wa, t.get("w_avg_decay", 0.995)))
            half_life = t.get("ema_kimg", 10.0) * 1000.0
            if t.get("ema_rampup", 0.0) > 0:
                half_life = min(half_life, B * t["ema_rampup"])
            beta = 0.5 ** (B / half_life) if half_life > 0 else 0.0
            for n in self.g_trained_names:
                self.ema[n].lerp_(self.gp[n].detach(), 1.0 - beta)
            for n in self.buffers:
                self.ema[n].copy_(self.gp[n].detach())
        # ---- D_main
        self.d_opt.zero_grad(set_to_none=False)
        levels = self.D.L
        real = pyramid(images, levels)
        with self.autocast():
            with torch.no_grad():
                t_d = self.E(ids)[2].float()
                fake = self.fake_pyramid(self.generate(ids, z_d)[0])
            t_hat = torch.roll(t_d, 1, 0)
            preds = self.D.forward([torch.cat([r, f, r, f]) for r, f in zip(real, fake)],
                                   torch.cat([t_d, t_d, t_hat, t_hat]))
            v = [p.float() for p in preds.values()]
            d_adv = sum(sp(-x[:B]).mean() + sp(x[B:2 * B]).mean() for x in v)
            d_match = sum(sp(x[2 * B:3 * B]).mean() + sp(x[3 * B:]).mean() for x in v)
            loss = d_adv + match * d_match
        loss.backward()
        out["d_loss"] = loss
        self.d_opt.step()
        # ---- D_r1 (every step in the bench)
        self.d_opt.zero_grad(set_to_none=False)
        xr = [x.detach().requires_grad_(True) for x in real]
        with self.autocast():
            preds = self.D.forward(xr, t_d)
            total = sum(p.float().sum() for p in preds.values())
        gs = torch.autograd.grad(total, xr, create_graph=True)
        per_sample = sum(g.float().square().flatten(1).sum(1) for g in gs)
        r1 = t.get("r1_gamma", 0.2048) / 2 * per_sample.mean()
        (r1 * t.get("r1_interval", 16)).backward()
        out["r1"] = r1
        self.d_opt.step()
        return out

    def infer(self):
        with torch.no_grad(), self.autocast():
            imgs, _, _ = self.generate(self.inputs["ids"], self.inputs["z"])
        return imgs


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_steps(fn, dev, warmup, iters):
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    for _ in range(iters):
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak(fn, dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        top = torch.cuda.max_memory_allocated()
        return {"peak_bytes": top - before, "peak_total_bytes": top, "reserved_bytes": torch.cuda.memory_reserved()}
    return {"peak_bytes": cpu_peak_bytes(fn)}


def main():
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    dev = torch.device(job["device"])
    if job["precision"] == "bf16" and dev.type == "cpu" and int(torch.__version__.split(".")[0]) < 2:
        sys.exit(f"torch_train_step.py: bf16 autocast on the CPU (torch {torch.__version__}) cannot run the references "
                 "(its CPU autocast leaves layer_norm with bf16 inputs and f32 weights); compare bf16 on CUDA, or run "
                 "bench_train_step --ours-only")
    if dev.type == "cuda":
        # The references create small constants (FIR filters, zeros) without a device argument.
        torch.set_default_device(dev)
    s = Step(job)
    res = {"bench": "train_step" if job["mode"] == "train" else "infer", "side": "pytorch",
           "torch": torch.__version__, "device": job["device"], "precision": job["precision"],
           "batch": job["batch"], "threads": job["threads"], "iters": job["iters"]}
    if job["mode"] == "train":
        first = {k: float(v) for k, v in s.step().items()}  # the first step: the loss check
        res["first_step"] = first
        res["median_ms"] = time_steps(s.step, dev, max(job["warmup"] - 1, 0), job["iters"])
        res.update(peak(s.step, dev))
    else:
        res["median_ms"] = time_steps(s.infer, dev, job["warmup"], job["iters"])
        res["images_per_s"] = job["batch"] / (res["median_ms"] / 1e3)
        res["flops_per_image"] = job["flops_per_image"]  # counted by bench_train_step (same for both sides)
        if job.get("peak_tflops", 0) > 0:
            res["mfu"] = res["images_per_s"] * res["flops_per_image"] / (job["peak_tflops"] * 1e12)
        res.update(peak(s.infer, dev))
        img = s.infer()
        img = img[max(img)].float()
        res["images"] = {"mean": img.mean().item(), "abs_mean": img.abs().mean().item()}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
