#!/usr/bin/env bash
# test.sh: set everything up (scripts/setup.sh), build, and run the whole test suite with ctest.
#
# Two builds:
#   build/           the real configuration (CUDA backend compiled when the toolkit is found).
#                    Every test runs; GPU tests (label gpu) skip with a message when no CUDA device
#                    is present, and run for real when one is.
#   build-emulated/  -DENGINE_CUDA=EMULATE: the CUDA backend's sources compiled with g++ against
#                    the host runtime of tensor/cuda/emulation/. The gpu-labelled tests run there
#                    against the emulated device, so every CUDA code path is exercised on machines
#                    without a GPU (docs/cuda.md "The launch rule and the emulated device"), the
#                    gpu-labelled MPI tests too (tests/mpi/mpi_gpu_*.cpp). Skip it with EMULATED=0.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
JOBS=${JOBS:-$(nproc)}
(cd "${BUILD_DIR:-build}" && OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} ctest --output-on-failure -j"${JOBS}" --timeout 1500)

if [ "${EMULATED:-1}" != "0" ]; then
  EMU_DIR=${EMULATED_BUILD_DIR:-build-emulated}
  cmake -S . -B "$EMU_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DENGINE_CUDA=EMULATE \
    -DENGINE_PYTHON=/usr/bin/python3 >/dev/null
  gpu_targets=$(cd tests && ls gpu_*.cpp | sed 's/\.cpp$//')
  # The gpu-labelled MPI tests (tests/mpi/mpi_gpu_*.cpp, run through mpirun) when MPI was found.
  for t in $(cd tests/mpi && ls mpi_gpu_*.cpp 2>/dev/null | sed 's/\.cpp$//'); do
    if cmake --build "$EMU_DIR" --target help | grep -w "$t" >/dev/null; then gpu_targets="$gpu_targets $t"; fi
  done
  # shellcheck disable=SC2086
  cmake --build "$EMU_DIR" -j"$JOBS" --target $gpu_targets
  (cd "$EMU_DIR" && OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} ctest -L gpu --output-on-failure \
    -j"${JOBS}" --timeout 1500)
fi
