#!/usr/bin/env bash
# demo.sh: set everything up (scripts/setup.sh: Debian packages, the emoji dataset, the build) and
# train the tiny16 preset on the built-in emoji data (docs/training.md). About 12 minutes of
# training on 2 CPU cores, growing 4 -> 8 -> 16 px. Writes runs/demo/:
#   samples/latest.png       G_ema samples for 16 fixed emoji names (samples/captions.txt), and
#   samples/step-*.png       the same z and captions at every 100 steps (step 0 = untrained)
#   samples/reals.png        the real emoji for those captions
#   losses.png, metrics.jsonl, checkpoints/ckpt-*.safetensors
# then draws a grid with `aurora sample` and a text interpolation with `aurora interpolate`.
#
#   NP=2 bash scripts/demo.sh        # data parallel over 2 MPI ranks (needs the MPI build)
#   CONFIG=configs/tiny32.json bash scripts/demo.sh
#   extra arguments go to `aurora train`, e.g. bash scripts/demo.sh --steps 300
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
CONFIG=${CONFIG:-configs/tiny16.json}
OUT=${OUT:-runs/demo}
NP=${NP:-1}
# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads
# of one pool steal the cores the other needs (docs/design.md, item 6).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
if [ -d "$OUT" ]; then
  echo "demo: removing the previous $OUT"
  rm -rf "$OUT"
fi
start=$(date +%s)
if [ "$NP" -gt 1 ]; then
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} mpirun --oversubscribe -np "$NP" -x OMP_NUM_THREADS -x OMP_WAIT_POLICY \
    "$BUILD_DIR/aurora" train --config "$CONFIG" --out "$OUT" "$@"
else
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} "$BUILD_DIR/aurora" train --config "$CONFIG" --out "$OUT" "$@"
fi
end=$(date +%s)
ckpt=$(ls "$OUT"/checkpoints/ckpt-*.safetensors | tail -n 1)
"$BUILD_DIR/aurora" sample --ckpt "$ckpt" --prompt "red apple" --prompt "green apple" --prompt "blue heart" \
  --prompt "yellow heart" --n 16 --psi 1.0 --out "$OUT/sample_prompts.png"
"$BUILD_DIR/aurora" interpolate --ckpt "$ckpt" --prompt "red heart" --prompt2 "blue heart" --mode text --steps 8 \
  --rows 4 --psi 1.0 --out "$OUT/interpolate_text.png"
echo "demo: training took $((end - start)) s; samples in $OUT/samples/ (step-00000000.png = untrained,"
echo "      latest.png = trained, reals.png = the data), $OUT/losses.png, $OUT/sample_prompts.png, $OUT/interpolate_text.png"
