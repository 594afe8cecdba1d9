#!/usr/bin/env python3
"""bench_scaling.py: data-parallel scaling of `aurora train` on CPU (issue 6; docs/distributed.md).

Runs `mpirun -np N build/aurora train` on the tiny preset for N = 1, 2, 4 (oversubscribed where
the machine has fewer cores) at the same global batch, and reports images/s per rank count.

Startup (MPI launch, model build, data loading) is removed by timing two runs per N, of S1 and S2
steps: images/s = (S2 - S1) * global_batch / (t2 - t1). Each rank runs with OMP_NUM_THREADS =
max(1, cores // N), so N = 1 uses the whole machine too (a fair baseline, not one thread).

Prints a table and one machine-readable line per case (DESIGN.md section 13 style):
    BENCH case=train_tiny16_np2 metric=images_per_s ours=X ref=Y ratio=X/Y ref_name=np1
When build/aurora is missing or has no `train` subcommand it says so and exits 0 without numbers.
Usage: python3 bench/bench_scaling.py [--aurora build/aurora] [--config configs/tiny16.json]
           [--nps 1,2,4] [--steps 4,12] [--batch 16] [--data emoji]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def has_train(aurora):
    if not os.path.isfile(aurora) or not os.access(aurora, os.X_OK):
        return False, f"{aurora} does not exist (build it: cmake --build build --target aurora)"
    r = subprocess.run([aurora, "train", "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"{aurora} has no 'train' subcommand yet ({(r.stderr or r.stdout).strip().splitlines()[-1:]})"
    return True, ""


def run_once(args, np_, steps, out):
    threads = max(1, (os.cpu_count() or 1) // np_)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    # As scripts/demo.sh: idle OpenMP threads sleep, so oversubscribed ranks do not spin on each
    # other's cores (a caller's own setting wins).
    env.setdefault("OMP_WAIT_POLICY", "passive")
    cmd = [shutil.which("mpirun") or "mpirun", "--oversubscribe", "--allow-run-as-root", "--bind-to", "none",
           "-np", str(np_), args.aurora, "train", "--config", args.config, "--out", out, "--steps", str(steps),
           "--set", f"train.batch_size={args.batch}"]
    if args.data:
        cmd += ["--data", args.data]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"bench_scaling: np={np_} steps={steps} failed (rc {r.returncode}):\n{' '.join(cmd)}\n"
                 f"{r.stderr[-2000:]}")
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aurora", default=os.path.join(ROOT, "build", "aurora"))
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "tiny16.json"))
    ap.add_argument("--nps", default="1,2,4")
    ap.add_argument("--steps", default="4,12", help="S1,S2: the two run lengths whose difference is timed")
    ap.add_argument("--batch", type=int, default=16, help="global batch (train.batch_size), divisible by every N")
    ap.add_argument("--data", default="", help="passed to aurora train --data (default: the preset's)")
    args = ap.parse_args()

    ok, why = has_train(args.aurora)
    if not ok:
        print(f"bench_scaling: skipped: {why}")
        return 0
    nps = [int(x) for x in args.nps.split(",")]
    s1, s2 = (int(x) for x in args.steps.split(","))
    for n in nps:
        if args.batch % n:
            sys.exit(f"bench_scaling: global batch {args.batch} is not divisible by np={n}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="aurora_scaling_") as tmp:
        for n in nps:
            t1 = run_once(args, n, s1, os.path.join(tmp, f"np{n}_a"))
            t2 = run_once(args, n, s2, os.path.join(tmp, f"np{n}_b"))
            ips = (s2 - s1) * args.batch / max(t2 - t1, 1e-9)
            rows.append((n, t1, t2, ips))
    base = rows[0][3]
    print(f"aurora train scaling: {os.path.basename(args.config)}, global batch {args.batch}, "
          f"{os.cpu_count()} cores, steps {s1} vs {s2}")
    print("| np | threads/rank | t(S1) s | t(S2) s | images/s | speed-up vs np=1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n, t1, t2, ips in rows:
        print(f"| {n} | {max(1, (os.cpu_count() or 1) // n)} | {t1:.2f} | {t2:.2f} | {ips:.2f} | {ips / base:.2f} |")
    for n, _, _, ips in rows:
        print(f"BENCH case=train_{os.path.splitext(os.path.basename(args.config))[0]}_np{n} metric=images_per_s "
              f"ours={ips:.4g} ref={base:.4g} ratio={ips / base:.4g} ref_name=np{nps[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
