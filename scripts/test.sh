#!/usr/bin/env bash
# test.sh: set everything up (scripts/setup.sh), build, and run the whole test suite with ctest.
# GPU tests (label gpu) skip with a message when no CUDA device is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd "${BUILD_DIR:-build}"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} ctest --output-on-failure -j"${JOBS:-2}" --timeout 1500
