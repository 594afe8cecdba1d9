#!/usr/bin/env bash
# demo.sh: set everything up (scripts/setup.sh) and run the demo job.
# Until the Aurora trainer lands this is the engine demo: lazy-R1 steps of a small conv
# discriminator with the per-op memory profile (tables and a Chrome trace under runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} "${BUILD_DIR:-build}/bench/r1_demo" --out runs/demo "$@"
