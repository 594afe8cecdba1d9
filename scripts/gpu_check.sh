#!/usr/bin/env bash
# gpu_check.sh: everything docs/cuda.md "Not verified on a GPU yet" asks of a machine with a GPU,
# in steps that each fit a short session and can be rerun (the build directory is reused):
#
#   scripts/gpu_check.sh build   [OUT]   configure + build the CUDA targets (sm_90 unless
#                                        CUDA_ARCH is set; Release; all cores)
#   scripts/gpu_check.sh test    [OUT]   ctest -L gpu (every CPU-vs-CUDA parity test, the trainer
#                                        step, cuDNN, the profiler; mpi_gpu_* when mpirun exists)
#   scripts/gpu_check.sh profile [OUT]   aurora profile --device cuda on tiny16, f32 and bf16
#   scripts/gpu_check.sh bench   [OUT]   bench/gpu_bench.sh --device cuda, f32 then bf16
#   scripts/gpu_check.sh all     [OUT]   the four in order
#
# OUT (default build-gpu/check) receives one log per step and a summary line per step in
# OUT/summary.txt. Environment: BUILD (default build-gpu), CUDA_ARCH (default 90), BENCH_PYTHON
# (the PyTorch 2.x interpreter for the bench; default python3), JOBS (default nproc).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
step="${1:-all}"
out="${2:-$root/build-gpu/check}"
build="${BUILD:-$root/build-gpu}"
arch="${CUDA_ARCH:-90}"
jobs="${JOBS:-$(nproc)}"
mkdir -p "$out"
summary="$out/summary.txt"

note() { echo "gpu_check: $*" | tee -a "$summary"; }

run_build() {
  if ! command -v nvidia-smi > /dev/null 2>&1; then note "build: nvidia-smi not found (no GPU driver?)"; fi
  nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
  cmake -S "$root" -B "$build" -DENGINE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" -DCMAKE_BUILD_TYPE=Release \
    > "$out/configure.log" 2>&1 || { note "build: configure FAILED (configure.log)"; return 1; }
  local start=$SECONDS
  cmake --build "$build" -j "$jobs" > "$out/build.log" 2>&1 || { note "build: FAILED (build.log)"; return 1; }
  note "build: ok in $((SECONDS - start)) s, $(grep -c 'warning' "$out/build.log") warning lines"
}

run_test() {
  local start=$SECONDS
  (cd "$build" && ctest -L gpu -V --timeout 900) > "$out/test.log" 2>&1  # -V: the SKIPPED lines too
  local rc=$?
  note "test: rc $rc in $((SECONDS - start)) s: $(grep -E 'tests passed|tests failed' "$out/test.log" | tail -1)"
  grep -E "SKIPPED" "$out/test.log" | sort | uniq -c | sed 's/^/gpu_check:   /' | tee -a "$summary"
  return $rc
}

run_profile() {
  local rc=0
  for precision in f32 bf16; do
    "$build/aurora" profile --config "$root/configs/tiny16.json" --steps 3 --warmup 1 --device cuda \
      --set "train.precision=$precision" --out "$out/profile-$precision" > "$out/profile-$precision.log" 2>&1 || rc=1
    note "profile $precision: $(grep -E '^aurora profile: step|error' "$out/profile-$precision.log" | tail -1)"
  done
  return $rc
}

run_bench() {
  local rc=0
  for precision in f32 bf16; do
    BENCH_PYTHON="${BENCH_PYTHON:-python3}" "$root/bench/gpu_bench.sh" --device cuda --build "$build" \
      --precision "$precision" --out "$out/bench-$precision" > "$out/bench-$precision.log" 2>&1 || rc=1
    note "bench $precision: rc $rc, table in bench-$precision.log"
  done
  return $rc
}

case "$step" in
  build) run_build ;;
  test) run_test ;;
  profile) run_profile ;;
  bench) run_bench ;;
  all) run_build && { run_test; run_profile; run_bench; } ;;
  *) echo "usage: scripts/gpu_check.sh build|test|profile|bench|all [OUT]" >&2; exit 2 ;;
esac
