#!/usr/bin/env bash
# gpu_bench.sh: the whole-step and inference benches of bench/README.md ("gpu_bench.sh"), ours
# against PyTorch in the same run (bench/bench_train_step.cpp, bench/torch_train_step.py), and a
# table of the ratios ours / PyTorch with the targets:
#   training step   time ratio <= 0.9, peak-memory ratio <= 0.8   (tiny32 and the large preset)
#   inference       images/s of both sides and the MFU of each (no target; higher is better)
# Every JSON line of the runs is kept in OUT/results.jsonl, every log in OUT/*.log.
#
#   bench/gpu_bench.sh [--device cpu|cuda] [--build DIR] [--out DIR] [--threads N] [--iters N]
#                      [--warmup N] [--precision f32|bf16] [--batch B] [--large PRESET]
#                      [--large-batch B] [--infer-preset PRESET] [--infer-batch B]
#                      [--infer-precision f32|bf16] [--peak-tflops X] [--skip-large]
# Defaults: --device cpu: tiny32 at B = 4 with 2 threads each side, no large preset (paper64 is
# 1.2 B + 0.38 B parameters: not a CPU job), inference on tiny32 in f32 (validates the pipeline).
# --device cuda: tiny32 at B = 32, paper64 at B = 8 (--large-batch: raise it until the GPU is
# full; both sides must fit), inference of paper64 in bf16 at B = 64, the peak bf16 dense FLOP/s
# from nvidia-smi's GPU name (H100 / H200: 989 TFLOP/s; other GPUs need --peak-tflops).
# BENCH_PYTHON selects the PyTorch side's interpreter (default: the one the bench was built with).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
device=cpu build="$root/build" out="" threads="" iters=5 warmup=2 precision=f32 batch="" large=paper64
large_batch=8 infer_preset="" infer_batch="" infer_precision="" peak="" skip_large=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --precision) precision="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --large) large="$2"; shift 2 ;;
    --large-batch) large_batch="$2"; shift 2 ;;
    --infer-preset) infer_preset="$2"; shift 2 ;;
    --infer-batch) infer_batch="$2"; shift 2 ;;
    --infer-precision) infer_precision="$2"; shift 2 ;;
    --peak-tflops) peak="$2"; shift 2 ;;
    --skip-large) skip_large=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "gpu_bench.sh: unknown argument '$1' (see --help)" >&2; exit 1 ;;
  esac
done

bin="$build/bench/bench_train_step"
[[ -x "$bin" ]] || { echo "gpu_bench.sh: $bin not found; build it: cmake --build $build --target bench_train_step" >&2; exit 1; }
out="${out:-$build/gpu_bench}"
mkdir -p "$out"
: > "$out/results.jsonl"

if [[ "$device" == cuda ]]; then
  threads="${threads:-16}" batch="${batch:-32}"
  infer_preset="${infer_preset:-paper64}" infer_batch="${infer_batch:-64}" infer_precision="${infer_precision:-bf16}"
  if [[ -z "$peak" ]]; then
    gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)"
    case "$gpu" in
      *H100*|*H200*) peak=989 ;;  # dense bf16 tensor-core peak, SXM (NVIDIA's data sheets)
      *) echo "gpu_bench.sh: unknown GPU '$gpu': give its dense bf16 peak with --peak-tflops" >&2; exit 1 ;;
    esac
  fi
else
  threads="${threads:-2}" batch="${batch:-4}"
  infer_preset="${infer_preset:-tiny32}" infer_batch="${infer_batch:-8}" infer_precision="${infer_precision:-f32}"
  [[ -n "$large" && "$large" != paper64 ]] || skip_large=1  # paper64 on a CPU: only when asked by name
fi
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

run() {  # NAME ARGS...: one bench run; its JSON lines go to results.jsonl
  local name="$1"; shift
  echo "== $name: $bin $*" >&2
  if ! "$bin" "$@" > "$out/$name.log" 2>&1; then
    echo "gpu_bench.sh: $name failed; see $out/$name.log:" >&2
    tail -5 "$out/$name.log" >&2
    return 1
  fi
  grep '^{' "$out/$name.log" | sed "s/^{/{\"run\": \"$name\", /" >> "$out/results.jsonl"
}

common=(--device "$device" --threads "$threads" --iters "$iters" --warmup "$warmup")
status=0
run train_tiny32 --mode train --preset tiny32 --batch "$batch" --precision "$precision" "${common[@]}" --check || status=1
if [[ -z "$skip_large" ]]; then
  run "train_$(basename "$large" .json)" --mode train --preset "$large" --batch "$large_batch" --precision "$precision" \
    "${common[@]}" || status=1
fi
peak_args=()
[[ -n "$peak" ]] && peak_args=(--peak-tflops "$peak")
run "infer_$(basename "$infer_preset" .json)" --mode infer --preset "$infer_preset" --batch "$infer_batch" \
  --precision "$infer_precision" "${common[@]}" "${peak_args[@]}" --check || status=1

python3 - "$out/results.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = {}
for r in rows:
    runs.setdefault(r["run"], {})[r["side"]] = r
print()
print(f"{'run':<18} {'B':>4} {'prec':>5} {'ours ms':>10} {'torch ms':>10} {'time':>6} {'<=0.9':>6} "
      f"{'ours MB':>9} {'torch MB':>9} {'mem':>6} {'<=0.8':>6}")
for name, s in runs.items():
    o, t = s.get("ours"), s.get("pytorch")
    if not o or not t or o["bench"] != "train_step":
        continue
    tr, mr = o["median_ms"] / t["median_ms"], o["peak_bytes"] / t["peak_bytes"]
    print(f"{name:<18} {o['batch']:>4} {o['precision']:>5} {o['median_ms']:>10.1f} {t['median_ms']:>10.1f} {tr:>6.3f} "
          f"{'yes' if tr <= 0.9 else 'NO':>6} {o['peak_bytes'] / 2**20:>9.1f} {t['peak_bytes'] / 2**20:>9.1f} "
          f"{mr:>6.3f} {'yes' if mr <= 0.8 else 'NO':>6}")
for name, s in runs.items():
    o, t = s.get("ours"), s.get("pytorch")
    if not o or not t or o["bench"] != "infer":
        continue
    mfu = lambda r: f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a"
    print(f"{name}: B = {o['batch']}, {o['precision']}, {o['flops_per_image'] / 1e9:.3g} GFLOP/image: ours "
          f"{o['images_per_s']:.1f} img/s (MFU {mfu(o)}), PyTorch {t['images_per_s']:.1f} img/s (MFU {mfu(t)}), "
          f"ours / PyTorch {o['images_per_s'] / t['images_per_s']:.3f}")
EOF
exit $status
