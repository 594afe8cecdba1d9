#!/usr/bin/env python3
"""cost_model.py: predicted step time and communication volume of paper64 training on 8..256 GPUs.

Issue 6 asks for a model that predicts, from a measured per-GPU step time and NCCL bus bandwidths
(docs/distributed-notes.md section 5), the step time and the allreduce / all-to-all volume of the
paper64 preset under data parallelism with expert parallelism. docs/distributed.md ("Cost model")
lists and justifies every assumption; this file only does the arithmetic. Nothing here is a
measurement except the input --step-time.

Model (weak scaling: the per-GPU batch b stays fixed, the global batch is n * b):
  parameters     expert parameters from the config (every MoE layer: E experts of
                 C*2H + 2H + H*C + C, C = attn_heads * attn_head_dim, H = expert_hidden);
                 G and D totals from `aurora params` (defaults: 1166.3 M and 378.8 M);
  allreduce      per iteration: G's replicated gradients over all n GPUs, G's expert gradients
                 over the EDP group (n / EP GPUs) for the E/EP experts each GPU owns, D's gradients
                 over all n (twice when the lazy R1 phase runs: 1/r1_interval of the iterations);
                 t = 2 (k-1)/k * S / busbw(k)  (nccl-tests' bus-bandwidth definition) + alpha per
                 bucket;
  all-to-all     per iteration the generator runs forward in G_main and D_main and backward in
                 G_main; each MoE layer does a dispatch and a combine all-to-all per forward and per
                 backward: 6 all-to-alls per layer. Each moves tokens * C * bytes per GPU, of which
                 (EP-1)/EP leaves the GPU (uniform routing); t = (EP-1)/EP * S / busbw + alpha;
  bandwidth      a group inside one node (EP groups are consecutive ranks, EDP groups strided by
                 EP; ranks numbered node by node) runs at the NVLink bus bandwidth, a group spanning
                 nodes at the per-GPU network bandwidth (the slowest link of a ring);
  step time      t_step = t_compute + t_a2a + (1 - overlap) * t_allreduce; the all-to-alls sit on
                 the critical path (the experts wait for them), the gradient allreduce can overlap
                 backward (bucketed, DESIGN.md section 10): --overlap gives the hidden fraction.
Output: a table per EP size and, with --json, one JSON object per row.
Usage: python3 bench/cost_model.py --step-time 0.9 --batch-per-gpu 32 [--ep 1,4] [--gpus 8,16,...]
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def moe_layers(gen):
    """(tokens per image, experts) for every MoE layer of the generator config."""
    layers = []
    for res, st in sorted(gen["stages"].items(), key=lambda kv: int(kv[0])):
        if st.get("num_experts", 0) > 0:
            for _ in range(st["attn_modules"] * st["attn_depth"]):
                layers.append((int(res) ** 2, st["num_experts"]))
    return layers


def allreduce_s(size_bytes, k, busbw, alpha, bucket_bytes):
    if k <= 1 or size_bytes <= 0:
        return 0.0
    buckets = max(1, -(-size_bytes // bucket_bytes))
    return 2 * (k - 1) / k * size_bytes / busbw + alpha * buckets


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "paper64.json"))
    ap.add_argument("--step-time", type=float, default=None,
                    help="measured compute time of one training iteration on one GPU, seconds (required)")
    ap.add_argument("--batch-per-gpu", type=int, default=32, help="images per GPU per iteration")
    ap.add_argument("--gpus", default="8,16,32,64,128,256")
    ap.add_argument("--ep", default="1,4", help="EP sizes to tabulate (each must divide every layer's expert count)")
    ap.add_argument("--g-params", type=float, default=1166.3e6, help="generator parameters (aurora params)")
    ap.add_argument("--d-params", type=float, default=378_778_629, help="discriminator parameters")
    ap.add_argument("--grad-bytes", type=int, default=4, help="bytes per gradient element (f32 allreduce)")
    ap.add_argument("--act-bytes", type=int, default=2, help="bytes per token element in the all-to-alls (bf16)")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--nvlink-busbw", type=float, default=370e9, help="bytes/s inside a node (8xH100: ~370 GB/s)")
    ap.add_argument("--net-busbw", type=float, default=47e9,
                    help="bytes/s per GPU across nodes (one NDR 400G NIC per GPU: 46-48 GB/s)")
    ap.add_argument("--alpha", type=float, default=20e-6, help="latency per collective call, seconds")
    ap.add_argument("--bucket-mb", type=float, default=16.0, help="allreduce bucket size (DataParallel default)")
    ap.add_argument("--r1-interval", type=int, default=16)
    ap.add_argument("--overlap", type=float, default=0.0, help="fraction of the allreduce hidden behind backward")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.step_time is None:
        sys.exit("cost_model: --step-time (the measured per-GPU iteration time in seconds) is required")

    with open(args.config) as f:
        gen = json.load(f)["generator"]
    C = gen["attn_heads"] * gen["attn_head_dim"]
    H = gen["expert_hidden"]
    per_expert = C * 2 * H + 2 * H + H * C + C
    layers = moe_layers(gen)
    n_experts = sum(e for _, e in layers)
    expert_params = n_experts * per_expert
    replicated_g = args.g_params - expert_params
    tokens_per_image = sum(t for t, _ in layers)
    b = args.batch_per_gpu
    bucket = args.bucket_mb * 2**20

    def busbw(k, stride):
        # Ranks r, r + stride, ... (k of them) fit in one node when their span does (ranks are
        # numbered node by node, as mpirun's default mapping does).
        inside = stride * (k - 1) + 1 <= args.gpus_per_node
        return args.nvlink_busbw if inside else args.net_busbw

    if not args.json:
        print(f"paper64 ({os.path.basename(args.config)}): {len(layers)} MoE layers, {n_experts} experts of "
              f"{per_expert / 1e6:.3f} M = {expert_params / 1e6:.1f} M expert parameters; G replicated "
              f"{replicated_g / 1e6:.1f} M, D {args.d_params / 1e6:.1f} M; {tokens_per_image} MoE tokens per image")
        print(f"inputs: step time {args.step_time} s at {b} images/GPU, NVLink {args.nvlink_busbw / 1e9:.0f} GB/s, "
              f"network {args.net_busbw / 1e9:.0f} GB/s per GPU, {args.gpus_per_node} GPUs/node, "
              f"overlap {args.overlap:.0%}")
    for ep in (int(x) for x in args.ep.split(",")):
        rows = []
        for n in (int(x) for x in args.gpus.split(",")):
            if ep > n or n % ep or any(e % ep for _, e in layers):
                continue
            # Allreduce volume (bytes per GPU entering the collective) and time per iteration.
            r1 = 1.0 / args.r1_interval
            g_rep = replicated_g * args.grad_bytes
            g_exp = expert_params / ep * args.grad_bytes
            d = args.d_params * args.grad_bytes * (1 + r1)
            edp = n // ep
            t_ar = (allreduce_s(g_rep, n, busbw(n, 1), args.alpha, bucket)
                    + allreduce_s(g_exp, edp, busbw(edp, ep), args.alpha, bucket)
                    + allreduce_s(args.d_params * args.grad_bytes, n, busbw(n, 1), args.alpha, bucket) * (1 + r1))
            ar_bytes = g_rep + (g_exp if edp > 1 else 0) + d
            # All-to-all: 6 per MoE layer per iteration, tokens * C * bytes per GPU each.
            a2a_bytes = 6 * tokens_per_image * b * C * args.act_bytes
            off_gpu = a2a_bytes * (ep - 1) / ep
            t_a2a = off_gpu / busbw(ep, 1) + (6 * len(layers) * args.alpha if ep > 1 else 0.0)
            t_step = args.step_time + t_a2a + (1 - args.overlap) * t_ar
            ips = n * b / t_step
            ideal = n * b / args.step_time
            rows.append(dict(gpus=n, ep=ep, edp=edp, step_s=t_step, compute_s=args.step_time, allreduce_s=t_ar,
                             alltoall_s=t_a2a, allreduce_gb_per_gpu=ar_bytes / 1e9, alltoall_gb_per_gpu=off_gpu / 1e9,
                             images_per_s=ips, efficiency=ips / ideal))
        if args.json:
            for r in rows:
                print(json.dumps(r))
            continue
        print(f"\nEP = {ep}")
        print("| GPUs | EDP | allreduce GB/GPU | t_allreduce s | all-to-all GB/GPU | t_a2a s | step s | images/s | efficiency |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['gpus']} | {r['edp']} | {r['allreduce_gb_per_gpu']:.2f} | {r['allreduce_s']:.3f} | "
                  f"{r['alltoall_gb_per_gpu']:.2f} | {r['alltoall_s']:.3f} | {r['step_s']:.3f} | "
                  f"{r['images_per_s']:.0f} | {r['efficiency']:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
