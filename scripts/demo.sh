#!/usr/bin/env bash
# demo.sh: set everything up (scripts/setup.sh: Debian packages, the emoji dataset, the build) and
# train the tiny16 preset on the built-in emoji data (docs/training.md). About 6 to 10 minutes of
# training on 2 CPU cores (depending on the load), growing 4 -> 8 -> 16 px. Writes runs/demo/:
#   samples/latest.png       G_ema samples for 16 fixed emoji names (samples/captions.txt), and
#   samples/step-*.png       the same z and captions at every 100 steps (step 0 = untrained)
#   samples/reals.png        the real emoji for those captions
#   losses.png, metrics.jsonl, checkpoints/ckpt-*.safetensors
# then draws a grid with `aurora sample` and a text interpolation with `aurora interpolate`.
#
# Training runs under mpirun (data parallel over NP ranks, the same global batch of 16, each
# rank with nproc / NP OpenMP threads; docs/distributed.md). The default is 2 ranks, so the demo
# also exercises data parallelism; on the 2-core development machine 1 rank x 2 threads measured
# 8-15% faster (docs/training.md, "The demo").
#   NP=2 bash scripts/demo.sh        # 2 ranks x 1 thread
#   NP=1 bash scripts/demo.sh        # 1 rank x 2 threads
#   SKIP_SETUP=1 bash scripts/demo.sh    # already set up and built
#   CONFIG=configs/tiny32.json bash scripts/demo.sh
#   extra arguments go to `aurora train`, e.g. bash scripts/demo.sh --steps 300
set -euo pipefail
cd "$(dirname "$0")/.."
# SKIP_SETUP=1: the build and the dataset are already there.
[ "${SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
CONFIG=${CONFIG:-configs/tiny16.json}
OUT=${OUT:-runs/demo}
NP_DEFAULT=2
NP=${NP:-$NP_DEFAULT}
# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads
# of one pool steal the cores the other needs (docs/design.md, item 6).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# Threads per rank: the cores shared by the ranks (at least one).
threads=$(( $(nproc) / NP ))
[ "$threads" -ge 1 ] || threads=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
if [ -d "$OUT" ]; then
  echo "demo: removing the previous $OUT"
  rm -rf "$OUT"
fi
start=$(date +%s)
if command -v mpirun > /dev/null; then
  # --oversubscribe: NP may exceed the cores mpirun counts; --allow-run-as-root: containers.
  mpi_args=(--oversubscribe --bind-to none -np "$NP" -x OMP_NUM_THREADS -x OMP_WAIT_POLICY)
  [ "$(id -u)" = 0 ] && mpi_args=(--allow-run-as-root "${mpi_args[@]}")
  echo "demo: mpirun -np $NP, $OMP_NUM_THREADS OpenMP thread(s) per rank"
  mpirun "${mpi_args[@]}" "$BUILD_DIR/aurora" train --config "$CONFIG" --out "$OUT" "$@"
else
  echo "demo: mpirun not found (install openmpi-bin: scripts/setup.sh does); one process, $OMP_NUM_THREADS thread(s)"
  "$BUILD_DIR/aurora" train --config "$CONFIG" --out "$OUT" "$@"
fi
end=$(date +%s)
ckpt=$(ls "$OUT"/checkpoints/ckpt-*.safetensors | tail -n 1)
"$BUILD_DIR/aurora" sample --ckpt "$ckpt" --prompt "red apple" --prompt "green apple" --prompt "blue heart" \
  --prompt "yellow heart" --n 16 --psi 1.0 --out "$OUT/sample_prompts.png"
"$BUILD_DIR/aurora" interpolate --ckpt "$ckpt" --prompt "red heart" --prompt2 "blue heart" --mode text --steps 8 \
  --rows 4 --psi 1.0 --out "$OUT/interpolate_text.png"
echo "demo: training took $((end - start)) s; samples in $OUT/samples/ (step-00000000.png = untrained,"
echo "      latest.png = trained, reals.png = the data), $OUT/losses.png, $OUT/sample_prompts.png, $OUT/interpolate_text.png"
