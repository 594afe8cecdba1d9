#!/usr/bin/env python3
"""PyTorch side of bench_model: the tiny32 Aurora models, timed the way bench_model.cpp times ours.

The networks are the parity references (tests/parity/ref_discriminator.py, ref_generator.py),
imported, run on the weights and inputs bench_model wrote (safetensors), with the same thread count.

  d_r1        g = grad(sum_ij sum_b D_ij, pyramid, create_graph); r1 = sum_k sum(g_k^2) / B;
              r1.backward() to every parameter
  g_fwd_bwd   images = G(z, clip_tokens, eot); L = sum_r <img_r, go_r> + moe_loss; L.backward()

Parameter gradients are allocated once before timing and zeroed per repetition (what
optimizer.zero_grad() does in torch 1.13), as our flat gradient buffer exists before the step.

Usage: bench_model_torch.py JOB   (JSON: threads, reps, cases: {name: {weights, inputs}})
Prints one JSON object {case: {"time_ms": median, "peak_bytes": peak, "loss": value}} on stdout.
peak_bytes is the high-water mark of bytes held by tensors allocated during one repetition, from
the profiler's memory events (bench/bench_core_torch.py).
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "parity"))
import safetensors_io  # noqa: E402
from bench_core_torch import peak_bytes, time_ms  # noqa: E402


def leaves(weights):
    """Parameters as leaves with their .grad allocated (zeros)."""
    params = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
    for p in params.values():
        p.grad = torch.zeros_like(p)
    return params


def zero_grads(params):
    for p in params.values():
        p.grad.zero_()


def d_r1_case(spec):
    from ref_discriminator import RefD

    weights, _ = safetensors_io.load(spec["weights"])
    inputs, meta = safetensors_io.load(spec["inputs"])
    cfg = json.loads(meta["config"])
    params = leaves(weights)
    d = RefD(cfg, params)
    xs = [inputs[f"x/{k}"] for k in range(d.L)]
    t = inputs["t"]
    batch = xs[0].shape[0]
    box = {}

    def step():
        xr = [x.detach().requires_grad_(True) for x in xs]
        preds = d.forward(xr, t)
        total = sum(v.sum() for v in preds.values())
        gs = torch.autograd.grad(total, xr, create_graph=True)
        r1 = sum(g.square().sum() for g in gs) / batch
        r1.backward()
        box["loss"] = r1.item()
        zero_grads(params)

    return step, box


def g_fwd_bwd_case(spec):
    from ref_generator import RefG

    weights, _ = safetensors_io.load(spec["weights"])
    inputs, meta = safetensors_io.load(spec["inputs"])
    cfg = json.loads(meta["config"])
    buffers = set(json.loads(meta["buffers"]))
    params = {k: v.clone().requires_grad_(k not in buffers) for k, v in weights.items()}
    trained = {k: v for k, v in params.items() if k not in buffers}
    for v in trained.values():
        v.grad = torch.zeros_like(v)
    g = RefG(cfg, params)
    z, tokens, eot = inputs["z"], inputs["clip_tokens"], inputs["eot"]
    go = {int(k.split("/")[1]): v for k, v in inputs.items() if k.startswith("go/")}
    box = {}

    def step():
        images, moe, _, _, _ = g.forward(z, tokens, eot)
        loss = moe + sum((images[r] * go[r]).sum() for r in images)
        loss.backward()
        box["loss"] = loss.item()
        zero_grads(trained)

    return step, box


def main():
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    reps = job["reps"]
    out = {}
    makers = {"d_r1": d_r1_case, "g_fwd_bwd": g_fwd_bwd_case}
    for name, spec in job["cases"].items():
        step, box = makers[name](spec)
        t = time_ms(step, reps)
        out[name] = {"time_ms": t, "peak_bytes": peak_bytes(step), "loss": box["loss"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
